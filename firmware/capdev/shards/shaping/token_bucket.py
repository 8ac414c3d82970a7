# traffic-shaping.shaper: a token-bucket shaper. The instruction's bw_kbps is
# the rate; the burst is burst_ms of it (never below one 1500-byte packet),
# or "burst_bytes" when the budget carries it.
from capdev.shards import sdk
from capdev.shards.shaping import bucket

BURST_MS = 50
MIN_BURST = 1500


class Shard(sdk.Shard):
    period_ms = 10

    def _burst(self, budget):
        b = budget.get("burst_bytes")
        if b:
            return b
        b = budget.get("bw_kbps", 0) * 125 * BURST_MS // 1000
        return b if b > MIN_BURST else MIN_BURST

    def configure(self, budget):
        self.budget = budget
        if getattr(self, "shaper", None) is not None:
            self.shaper.set(budget.get("bw_kbps", 0), self._burst(budget))

    def start(self):
        self.shaper = bucket.Shaper(self.budget.get("bw_kbps", 0), self._burst(self.budget), self.clock)
        self.out = []  # packets released by step(), for the data path to send

    def enqueue(self, pkt):
        return self.shaper.enqueue(pkt)

    def dequeue(self):
        return self.shaper.dequeue()

    def step(self):
        # Release what the rate allows; the data path collects self.out.
        for _ in range(32):
            pkt = self.shaper.dequeue()
            if pkt is None:
                break
            self.out.append(pkt)

    def health(self):
        s = self.shaper
        return {"ok": True, "rate_kbps": s.rate_kbps, "burst_bytes": s.burst_bytes, "queued": len(s.queue),
                "sent": s.sent, "dropped": s.dropped}
