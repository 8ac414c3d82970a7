# Reconnect delays: exponential backoff with full jitter, a cap and a minimum
# interval between attempts, so a fleet that lost its broker together does not
# come back in one synchronised wave (a reconnect storm).
# Pure: the random source is passed in and no clock is read here.


class Backoff:
    def __init__(self, base_ms=500, cap_ms=30000, min_interval_ms=1000, random_below=None):
        if base_ms < 1 or cap_ms < base_ms or min_interval_ms < 0:
            raise ValueError("backoff needs 1 <= base_ms <= cap_ms and min_interval_ms >= 0")
        if random_below is None:
            from capdev.platform import random_below
        self.base_ms = base_ms
        self.cap_ms = cap_ms
        self.min_interval_ms = min_interval_ms
        self._rand = random_below
        self.attempt = 0

    def ceiling_ms(self):
        """Upper bound of the next delay before the minimum interval is applied."""
        c = self.base_ms
        for _ in range(self.attempt):
            c <<= 1
            if c >= self.cap_ms:
                return self.cap_ms
        return c

    def next_delay_ms(self, since_last_attempt_ms=None):
        """Delay before the next attempt: uniform in [0, ceiling], then at least
        ``min_interval_ms`` after the previous attempt started."""
        d = self._rand(self.ceiling_ms() + 1)
        self.attempt += 1
        if since_last_attempt_ms is not None:
            d = max(d, self.min_interval_ms - since_last_attempt_ms)
        return d

    def reset(self):
        self.attempt = 0
