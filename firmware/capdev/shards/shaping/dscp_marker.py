# traffic-shaping.marker: marks each packet with its class's RFC 4594 DSCP.
from capdev.shards import sdk
from capdev.shards.shaping import classes, dscp


class Shard(sdk.Shard):
    def start(self):
        self.marked = {}
        self.errors = 0
        self.table = dict(classes.DSCP)

    def mark(self, pkt, cls):
        """Set ``pkt``'s (bytearray) DSCP for QoS class ``cls``; returns the
        DSCP set, or None for a packet that is not IP (counted, left alone)."""
        code = self.table[classes.check(cls)]
        try:
            dscp.set_dscp(pkt, code)
        except dscp.PacketError:
            self.errors += 1
            return None
        self.marked[cls] = self.marked.get(cls, 0) + 1
        return code

    def health(self):
        return {"ok": True, "marked": sum(self.marked.values()), "errors": self.errors}
