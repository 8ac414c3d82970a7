# Keeps 1 KiB more on every step: the governor must stop it at its mem_kb.
from capdev.shards import sdk


class Shard(sdk.Shard):
    period_ms = 10

    def start(self):
        self.hoard = []

    def step(self):
        self.hoard.append(bytearray(1024))

    def health(self):
        return {"ok": True, "kb": len(self.hoard)}
