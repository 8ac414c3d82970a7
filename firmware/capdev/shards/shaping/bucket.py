# A token-bucket shaper core (pure; time from a clock). Packets wait in a
# bounded FIFO until the bucket holds their size; a full queue drops the
# newcomer (tail drop). Tokens are kept in milli-bytes so low rates refill.


class Shaper:
    def __init__(self, rate_kbps, burst_bytes, clock, queue_bytes=16384):
        self.clock = clock
        self.queue = []
        self.queued_bytes = 0
        self.queue_bytes = queue_bytes
        self.sent = 0
        self.sent_bytes = 0
        self.dropped = 0
        self._last = clock.ticks_ms()
        self._tokens = 0
        self.set(rate_kbps, burst_bytes)
        self._tokens = self._cap

    def set(self, rate_kbps, burst_bytes):
        """New rate and burst (an instruction's adjust); queued packets stay."""
        if rate_kbps < 0 or burst_bytes < 1:
            raise ValueError("shaper needs rate_kbps >= 0 and burst_bytes >= 1")
        self._refill()
        self.rate_kbps = rate_kbps
        self.burst_bytes = burst_bytes
        self._cap = burst_bytes * 1000
        if self._tokens > self._cap:
            self._tokens = self._cap

    def _refill(self):
        now = self.clock.ticks_ms()
        dt = self.clock.ticks_diff(now, self._last)
        self._last = now
        if dt > 0:
            self._tokens += dt * self.rate_kbps * 125  # 1 kbit/s for 1 ms = 125 milli-bytes
            if self._tokens > self._cap:
                self._tokens = self._cap

    def enqueue(self, pkt):
        """Queue ``pkt``; False (and counted) when the queue is full or the
        packet can never fit the burst."""
        n = len(pkt)
        if n > self.burst_bytes or self.queued_bytes + n > self.queue_bytes:
            self.dropped += 1
            return False
        self.queue.append(pkt)
        self.queued_bytes += n
        return True

    def dequeue(self):
        """The next packet the rate allows now, or None."""
        if not self.queue:
            return None
        self._refill()
        need = len(self.queue[0]) * 1000
        if self._tokens < need:
            return None
        self._tokens -= need
        pkt = self.queue.pop(0)
        self.queued_bytes -= len(pkt)
        self.sent += 1
        self.sent_bytes += len(pkt)
        return pkt
