# Resource governor: memory admission and accounting, a cooperative CPU
# scheduler weighted by priority, and per-shard token buckets. It reports the
# limits actually in force: where the runtime cannot measure something (heap
# on CPython) the limit is reported as "unenforced", never as the request.
from capdev import platform

UNENFORCED = "unenforced"


# ---- memory -------------------------------------------------------------------
class MemoryGovernor:
    """Heap measures for the checks around shard loads (ops.before_load and
    ops.after_load, cold: only applying ops needs them). ``heap`` provides
    heap_used()/heap_free() (the platform module; they return None where the
    runtime cannot tell)."""

    def __init__(self, floor_kb, heap=platform):
        self.floor_kb = floor_kb
        self._heap = heap
        self.enforced = heap.heap_used() is not None
        # Heap held by cold code loaded only for the current operation (set by
        # the manager while it applies ops): free again once that is done.
        self.lent_b = 0

    def measure(self):
        """Heap bytes in use after a collection, or None when unenforced."""
        if not self.enforced:
            return None
        return self._heap.heap_used()

    def free_b(self):
        """Free heap in bytes, counting what lent cold code gives back."""
        if not self.enforced:
            return None
        return self._heap.heap_free() + (self.lent_b if self.lent_b > 0 else 0)


def kb_up(nbytes):
    if nbytes <= 0:
        return 0
    return (nbytes + 1023) // 1024


# ---- CPU ------------------------------------------------------------------------
OK = "ok"
THROTTLE = "throttle"
STOP = "stop"

_STRIDE = 100000  # stride scheduling: pass advances by _STRIDE * cost / weight


class CpuSlot:
    def __init__(self, weight, period_ms, now, pass_):
        self.weight = weight
        self.period_ms = period_ms
        self.due = now
        self.pass_ = pass_
        self.overruns = 0  # consecutive steps longer than the slice
        self.throttled_until = None
        self.throttles = 0
        self.cpu_ms = 0


class CpuScheduler:
    """Gives periodic step() time by priority weight (stride scheduling).

    Each tick runs the due steps with the lowest pass first until the tick's
    budget is spent; a step's cost advances its pass by cost/weight, so under
    contention time is shared in proportion to weight. A step longer than its
    slice (tick budget * weight / capacity) is an overrun: the shard is paused
    for a growing multiple of what it took, and after ``max_overruns`` in a
    row it must be stopped. Slots are added, re-weighted and dropped by the
    cold ops.py (schedule, set_op, stop_instance): only the tick runs here.
    """

    def __init__(self, capacity=100, tick_budget_ms=20, min_slice_ms=2,
                 max_overruns=3, throttle_factor=8):
        self.capacity = capacity if capacity > 0 else 100
        self.tick_budget_ms = tick_budget_ms
        self.min_slice_ms = min_slice_ms
        self.max_overruns = max_overruns
        self.throttle_factor = throttle_factor
        self.slots = {}

    def slice_ms(self, weight):
        s = self.tick_budget_ms * weight // self.capacity
        return s if s > self.min_slice_ms else self.min_slice_ms

    def due(self, now):
        """Keys whose step is due, lowest pass first."""
        ready = []
        for key in self.slots:
            slot = self.slots[key]
            if slot.throttled_until is not None:
                if now < slot.throttled_until:
                    continue
                slot.throttled_until = None
            if now >= slot.due:
                ready.append((slot.pass_, key))
        ready.sort()
        return [key for _, key in ready]

    def charge(self, key, elapsed_ms, now):
        """Account one step; return OK, THROTTLE or STOP."""
        slot = self.slots[key]
        cost = elapsed_ms if elapsed_ms > 1 else 1
        slot.pass_ += _STRIDE * cost // slot.weight
        slot.cpu_ms += elapsed_ms
        slot.due = now + slot.period_ms
        if elapsed_ms <= self.slice_ms(slot.weight):
            slot.overruns = 0
            return OK
        slot.overruns += 1
        if slot.overruns >= self.max_overruns:
            return STOP
        slot.throttles += 1
        slot.throttled_until = now + elapsed_ms * (self.throttle_factor << (slot.overruns - 1))
        return THROTTLE


# ---- bandwidth ----------------------------------------------------------------------
MIN_BURST_BYTES = 1500  # one Ethernet MTU, so a low rate can still pass a packet


class TokenBucket:
    """Per-shard byte budget at ``rate_kbps``. Tokens are kept in milli-bytes so
    frequent small refills at low rates do not round down to nothing."""

    def __init__(self, rate_kbps, clock=platform, burst_ms=250):
        self.clock = clock
        self.burst_ms = burst_ms
        self.passed = 0
        self.refused = 0
        self._last = clock.ticks_ms()
        self.rate_kbps = 0
        self._tokens = 0
        self._cap = 0
        self.set_rate(rate_kbps)
        self._tokens = self._cap

    def set_rate(self, rate_kbps):
        self._refill()
        self.rate_kbps = rate_kbps
        if rate_kbps <= 0:
            self._cap = 0
        else:
            cap = rate_kbps * 125 * self.burst_ms  # bytes/s = kbps * 125
            self._cap = cap if cap > MIN_BURST_BYTES * 1000 else MIN_BURST_BYTES * 1000
        if self._tokens > self._cap:
            self._tokens = self._cap

    def _refill(self):
        now = self.clock.ticks_ms()
        dt = self.clock.ticks_diff(now, self._last)
        self._last = now
        if dt > 0 and self.rate_kbps > 0:
            self._tokens += dt * self.rate_kbps * 125
            if self._tokens > self._cap:
                self._tokens = self._cap

    def take(self, nbytes):
        """Spend ``nbytes`` if the bucket holds them; False means send later or drop."""
        self._refill()
        need = nbytes * 1000
        if self._tokens >= need:
            self._tokens -= need
            self.passed += nbytes
            return True
        self.refused += nbytes
        return False

    def available(self):
        self._refill()
        return self._tokens // 1000
