# The shard manager: turns verified operations into running shards and keeps
# them within budget and healthy. Below the instruction pipeline: it trusts
# that ops were authenticated, but still checks every value it acts on.
# Time comes from a clock object (ticks_ms/ticks_diff) so tests can drive it.
# This module is the resident hot loop (ticks, steps, heartbeats); applying
# ops and failures (cmm/ops.py), leases (leases.py) and reports (reports.py)
# are imported on use.
import sys

from capdev import platform
from capdev.cmm import governor
from capdev.cmm.health import EventLog, HealthPolicy, HealthRecord
from capdev.cmm.lifecycle import ERRORED, RUNNING, Lifecycle
from capdev.platform import const

# Why a running shard failed or was throttled: line n of _WHYS for number n,
# with "%s" filled in by _why(). One string constant: as separate pieces of
# text they were a heap object each on a board.
_WHY_NOT_OK = const(0)
_WHY_HEALTH_RAISED = const(1)
_WHY_STEP_RAISED = const(2)
_WHY_CPU = const(3)
_WHY_THROTTLED = const(4)
_WHY_MEMORY = const(5)
_WHYS = (
    "health reported not ok: %s\n"
    "health raised %s\n"
    "step raised %s\n"
    "cpu: step held the loop %s ms (slice %s ms), %s times in a row\n"
    "step took %s ms, slice %s ms\n"
    "memory: holds %s kb, over its mem_kb %s"
)


# One copy of this small helper per module that keeps a text table, on
# purpose: a shared module for it cost 2 KiB of steady heap (performance.md).
def _why(n, args):
    """Reason number ``n`` (a _WHY_ number), with ``args`` filled in."""
    return _WHYS.split("\n")[n] % args


def _ops():
    # The cold half; the agent unloads it between uses (see ops.py). Leases
    # and reports, used in one or two places, are imported where used.
    from capdev.cmm import ops

    return ops


class _Entry:
    """One activated shard: its op, code, instance and counters."""

    def __init__(self, op, sink):
        self.id = op["shard"]
        self.op = op
        self.life = Lifecycle(self.id, sink)
        self.health = HealthRecord()
        self.module = None
        self.inst = None
        self.bucket = None
        self.code_b = None  # heap the module's code took (None: unmeasured)
        self.data_b = 0  # heap held by the instance, summed over measured calls
        self.expires = None  # manager ms when a temporary op ends
        self.restart_at = None
        self.alt_of = None  # primary shard this one replaced on failover


class ShardManager:
    """Applies ops, steps running shards, watches health and leases.

    ``board_caps`` holds the capacities ({"cpu", "mem_kb", "bw_kbps"}; a
    missing key is not capped) and optionally "modules": {shard id: module}
    to find the code of failover alternates.
    """

    def __init__(self, board_caps, free_heap_floor_kb, clock=platform, policy=None,
                 tick_budget_ms=20, heap=platform):
        self.caps = board_caps
        self.clock = clock
        self.policy = policy or HealthPolicy()
        self.mem = governor.MemoryGovernor(free_heap_floor_kb, heap)
        self.cpu = governor.CpuScheduler(board_caps.get("cpu", 100), tick_budget_ms)
        self.events = EventLog()
        self.entries = {}  # shard id -> _Entry (live, errored or broken)
        self.fallbacks = 0
        self._baseline = {}  # shard id -> activate op of the agreement's baseline
        self._modules = dict(board_caps.get("modules") or {})
        self._lease_s = None
        self._last_ticks = clock.ticks_ms()
        self._mono = 0
        self._ops_b = 0  # heap the cold apply code takes (see _cold_ops); 0 until measured
        # Loaded up front so a caller measuring the heap sees them from the start.
        _ops()
        from capdev.cmm import reports  # noqa: F401

    # ---- time ---------------------------------------------------------------
    def _now(self):
        # Accumulate ticks into an unbounded ms count so leases longer than the
        # ticks wrap period still work (as long as tick() runs now and then).
        t = self.clock.ticks_ms()
        d = self.clock.ticks_diff(t, self._last_ticks)
        if d > 0:
            self._mono += d
        self._last_ticks = t
        return self._mono

    def _sink(self, shard, event, old, new, reason):
        self.events.emit(shard, event, self._mono, reason, old, new)

    # ---- the cold half (ops.py) --------------------------------------------------
    def apply(self, ops, lease_s=None, lent_b=0):
        """Carry out ``ops``; return one ack result per op, in order.

        Conflicts (two activations for one slot) are settled by prio, then
        recency (the later op wins); the loser is rejected with the reason.
        Deactivations run first, then adjustments, then activations from the
        highest priority down, so important shards get the resources first.
        ``lent_b``: heap the caller holds only for this instruction (the code
        that checked it); with the apply code's own, the free-heap floor
        counts it as free, since it goes once the instruction is done.
        """
        ops_mod = self._cold_ops()
        self.mem.lent_b = self._ops_b + lent_b
        try:
            return ops_mod.apply(self, ops, lease_s)
        finally:
            self.mem.lent_b = 0

    def set_baseline(self, ops):
        """Remember the agreement's baseline profile (the activate ops the
        device returns to when temporary ops end or the provider is lost)."""
        self._cold_ops().set_baseline(self, ops)

    def _cold_ops(self):
        """ops.py, imported if it is not loaded. The agent unloads it after
        each instruction: what importing it takes is noted (``_ops_b``) as
        heap lent to an apply, not spent. Its names were interned when the
        manager was built, so the figure is the code alone."""
        if "capdev.cmm.ops" in sys.modules:
            return _ops()
        before = self.mem.measure()
        ops = _ops()
        if before is not None:
            self._ops_b = self.mem.measure() - before
        return ops

    def provider_lost_for(self, seconds):
        """The agent calls this while the provider is unreachable. Past the
        lease, drop every temporary op and return to the baseline. True if it
        fell back now."""
        if self._lease_s is None or seconds <= self._lease_s:
            return False
        from capdev.cmm import leases

        return leases.provider_lost_for(self, seconds)

    def report(self):
        """{shard id: state, limits in force, heap, errors, ...} for the provider."""
        from capdev.cmm import reports

        return reports.report(self)

    # ---- running ----------------------------------------------------------------
    def tick(self):
        """One round of lease checks, restarts, heartbeats and shard steps."""
        now = self._now()
        for entry in self.entries.values():
            if entry.expires is not None and now >= entry.expires:
                from capdev.cmm import leases

                leases.expire(self, now)
                break
        for entry in list(self.entries.values()):
            if entry.restart_at is not None and now >= entry.restart_at and entry.life.state == ERRORED:
                entry.health.restarts += 1
                _ops().start(self, entry, now)
        self._heartbeats(now)
        self._steps()

    async def run(self, period_ms=50):
        """Tick forever (the agent's shard task); cancel the task to stop it."""
        import asyncio

        while True:
            self.tick()
            await asyncio.sleep(period_ms / 1000)

    def _heartbeats(self, now):
        for entry in list(self.entries.values()):
            if entry.inst is None or entry.life.state != RUNNING:
                continue
            if now - entry.health.checked_ms < self.policy.heartbeat_ms:
                continue
            entry.health.checked_ms = now
            try:
                state = entry.inst.health()
                why = None
                if not isinstance(state, dict) or state.get("ok", True) is False:
                    why = _why(_WHY_NOT_OK, str(state))
            except Exception as e:
                why = _why(_WHY_HEALTH_RAISED, _describe(e))
            if why is None:
                entry.health.beat(now)
            else:
                _ops().fail(self, entry, now, why)

    def _steps(self):
        clock = self.clock
        start = clock.ticks_ms()
        for key in self.cpu.due(self._now()):
            if clock.ticks_diff(clock.ticks_ms(), start) >= self.cpu.tick_budget_ms:
                break  # the rest stay due and go first next tick (lowest pass)
            entry = self.entries.get(key)
            if entry is None or entry.inst is None or entry.life.state != RUNNING:
                continue
            self._step(entry)

    def _step(self, entry):
        clock = self.clock
        before = self.mem.measure()
        err = None
        t0 = clock.ticks_ms()
        try:
            entry.inst.step()
        except Exception as e:
            err = _describe(e)
        elapsed = clock.ticks_diff(clock.ticks_ms(), t0)
        now = self._now()
        entry.health.latency(elapsed)
        if err is not None:
            _ops().fail(self, entry, now, _why(_WHY_STEP_RAISED, err))
            return
        if before is not None:
            entry.data_b += self.mem.measure() - before
        verdict = self.cpu.charge(entry.id, elapsed, now)
        slice_ms = self.cpu.slice_ms(entry.op["cpu"])
        if verdict == governor.STOP:
            _ops().fail(self, entry, now, _why(_WHY_CPU, (elapsed, slice_ms, self.cpu.max_overruns)))
            return
        if verdict == governor.THROTTLE:
            self.events.emit(entry.id, "throttled", now, _why(_WHY_THROTTLED, (elapsed, slice_ms)))
        used = self._heap_b(entry)
        if used is not None and used > entry.op["mem_kb"] * 1024:
            _ops().fail(self, entry, now, _why(_WHY_MEMORY, (governor.kb_up(used), entry.op["mem_kb"])))
            return
        entry.health.beat(now)

    def _heap_b(self, entry):
        if entry.code_b is None:
            return None
        return entry.code_b + entry.data_b

    # ---- reporting ------------------------------------------------------------------
    def health_events(self):
        """Drain the events (transitions, restarts, failovers, fallbacks)."""
        return self.events.drain()

    def shard(self, shard_id):
        """The running instance of ``shard_id`` (for the data path), or None."""
        entry = self.entries.get(shard_id)
        if entry is None or entry.life.state != RUNNING:
            return None
        return entry.inst

    def active_ops(self):
        """The ops currently in force (live shards), for the persisted profile."""
        out = []
        for entry in self.entries.values():
            if entry.life.is_live():
                out.append(entry.op)
        return out


def _describe(e):
    return type(e).__name__ + ": " + str(e)
