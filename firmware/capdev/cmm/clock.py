# A clock for tests and the board simulator, kept out of the resident
# manager: the manager takes any object with ticks_ms()/ticks_diff().
from capdev import platform


class OffsetClock:
    """Platform ticks plus a manual offset. Tests (and the board simulator)
    jump over leases and backoff delays with advance() while real step
    durations are still measured in real time."""

    def __init__(self):
        self._offset = 0

    def advance(self, ms):
        self._offset += ms

    def ticks_ms(self):
        return platform.ticks_add(platform.ticks_ms(), self._offset)

    def ticks_diff(self, a, b):
        return platform.ticks_diff(a, b)
