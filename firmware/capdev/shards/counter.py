# A trivial periodic shard: counts its steps. Useful to see the scheduler work.
from capdev.shards import sdk


class Shard(sdk.Shard):
    period_ms = 50

    def start(self):
        self.count = 0

    def step(self):
        self.count += 1

    def health(self):
        return {"ok": True, "count": self.count}
