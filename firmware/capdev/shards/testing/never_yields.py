# A step that busy-loops far beyond any slice: cooperative scheduling cannot
# pre-empt it, so the governor must measure, throttle and finally stop it.
from capdev import platform
from capdev.shards import sdk

SPIN_MS = 40


class Shard(sdk.Shard):
    period_ms = 10

    def step(self):
        t0 = platform.ticks_ms()
        while platform.ticks_diff(platform.ticks_ms(), t0) < SPIN_MS:
            pass
