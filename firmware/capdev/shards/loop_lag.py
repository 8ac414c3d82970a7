# Watches the event loop: each step measures how late it ran against its
# period. A light always-on shard; its health shows how responsive the device is.
from capdev.shards import sdk


class Shard(sdk.Shard):
    period_ms = 200

    def start(self):
        self.last = self.clock.ticks_ms()
        self.lag_max = 0
        self.steps = 0

    def step(self):
        now = self.clock.ticks_ms()
        lag = self.clock.ticks_diff(now, self.last) - self.period_ms
        self.last = now
        self.steps += 1
        if lag > self.lag_max:
            self.lag_max = lag

    def health(self):
        return {"ok": True, "steps": self.steps, "lag_max_ms": self.lag_max}
