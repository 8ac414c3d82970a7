# Starts fine, then raises in its first step.
from capdev.shards import sdk


class Shard(sdk.Shard):
    period_ms = 10

    def step(self):
        raise ValueError("step blew up")
