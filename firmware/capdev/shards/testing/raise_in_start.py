# Fails every start(): the manager must contain it, retry, fail over, give up.
from capdev.shards import sdk


class Shard(sdk.Shard):
    def start(self):
        raise RuntimeError("refusing to start")
