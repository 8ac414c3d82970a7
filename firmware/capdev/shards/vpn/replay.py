# Anti-replay window over 64-bit sequence numbers (the sliding bitmap of
# RFC 4303 3.4.3 / RFC 6479). Pure. check() before the tag is verified,
# accept() only after, so a forged datagram cannot move the window.


class ReplayWindow:
    def __init__(self, size=64):
        if size < 8 or size > 1024:
            raise ValueError("replay window must be 8..1024 packets")
        self.size = size
        self.top = 0  # highest sequence number accepted (0: none yet)
        self.bits = 0  # bit i set: top - i was seen

    def check(self, seq):
        """True if ``seq`` is new and inside the window."""
        if seq == 0:
            return False  # 0 is never sent: the first datagram is 1
        if seq > self.top:
            return True
        off = self.top - seq
        if off >= self.size:
            return False
        return not (self.bits >> off) & 1

    def accept(self, seq):
        if seq > self.top:
            shift = seq - self.top
            self.bits = ((self.bits << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            self.top = seq
        else:
            self.bits |= 1 << (self.top - seq)
