# Runs, but its health check says it is not ok: heartbeats must catch that.
from capdev.shards import sdk


class Shard(sdk.Shard):
    def health(self):
        return {"ok": False, "why": "link down"}
