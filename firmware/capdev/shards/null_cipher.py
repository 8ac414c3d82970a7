# The identity cipher: passes data through unchanged, within its bandwidth
# share. Stands in for a real cipher shard in tests and on plain links.
from capdev.shards import sdk


class Shard(sdk.Shard):
    def start(self):
        self.bytes_in = 0
        self.bytes_out = 0

    def process(self, data):
        """Return ``data`` when the bandwidth budget allows it, else None."""
        self.bytes_in += len(data)
        if self.bw is not None and not self.bw.take(len(data)):
            return None
        self.bytes_out += len(data)
        return data

    def health(self):
        return {"ok": True, "in": self.bytes_in, "out": self.bytes_out}
