# The shard manager: turns verified operations into running shards and keeps
# them within budget and healthy. Below the instruction pipeline: it trusts
# that ops were authenticated, but still checks every value it acts on.
# Time comes from a clock object (ticks_ms/ticks_diff) so tests can drive it.
from capdev import platform, protocol
from capdev.cmm import governor, loader
from capdev.cmm.health import GIVE_UP, EventLog, HealthPolicy, HealthRecord
from capdev.cmm.lifecycle import ABSENT, BROKEN, ERRORED, RUNNING, Lifecycle

_LIMIT_KEYS = ("cpu", "mem_kb", "bw_kbps")


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
        self.checked_ms = 0  # last health() call
        self.alt_of = None  # primary shard this one replaced on failover


def _ack(op, code, reason=""):
    shard = op.get("shard") if isinstance(op, dict) else None
    kind = op.get("op") if isinstance(op, dict) else None
    return {"shard": shard if isinstance(shard, str) else "", "op": kind if isinstance(kind, str) else "",
            "code": code, "reason": reason}


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check_op(op):
    """Reason why the manager cannot act on ``op``, or None."""
    if not isinstance(op, dict):
        return "operation must be a map"
    kind = op.get("op")
    if kind not in protocol.OPS:
        return "unknown op " + str(kind)
    shard = op.get("shard")
    if not isinstance(shard, str) or not shard:
        return "missing shard id"
    if kind == "deactivate":
        return None
    if kind == "activate" or "module" in op:
        try:
            loader.check_name(op.get("module"))
        except loader.LoadError as e:
            return e.reason
    cpu = op.get("cpu")
    if not _is_int(cpu) or cpu < 1 or cpu > 100:
        return "cpu weight must be an integer 1..100"
    for key in ("mem_kb", "bw_kbps", "dur_s"):
        if not _is_int(op.get(key)) or op[key] < 0:
            return key + " must be a non-negative integer"
    if op.get("prio") not in protocol.PRIORITIES:
        return "prio must be one of high, medium, low"
    alt = op.get("alt")
    if alt is not None and (not isinstance(alt, str) or alt == shard):
        return "alt must be another shard id or null"
    return None


def _rank(op):
    return protocol.PRIORITY_RANK.get(op.get("prio"), 2)


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
        self._running = False

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

    # ---- operations -----------------------------------------------------------
    def apply(self, ops, lease_s=None):
        """Carry out ``ops``; return one ack result per op, in order.

        Conflicts (two activations for one slot) are settled by prio, then
        recency (the later op wins); the loser is rejected with the reason.
        Deactivations run first, then adjustments, then activations from the
        highest priority down, so important shards get the resources first.
        """
        now = self._now()
        results = [None] * len(ops)
        valid = []
        for i in range(len(ops)):
            reason = check_op(ops[i])
            if reason is not None:
                results[i] = _ack(ops[i], protocol.REJECTED, reason)
            else:
                valid.append(i)
                op = ops[i]
                if op["op"] != "deactivate":
                    self._modules[op["shard"]] = op.get("module") or self._modules.get(op["shard"])
        # Settle conflicts: strongest first claims its shard id and slot.
        order = sorted(valid, key=lambda i: (-_rank(ops[i]), -i))
        claimed = {}
        keep = []
        for i in order:
            op = ops[i]
            keys = ["shard:" + op["shard"]]
            if op["op"] == "activate" and op.get("slot"):
                keys.append("slot:" + op["slot"])
            winner = None
            for k in keys:
                if k in claimed:
                    winner = claimed[k]
                    break
            if winner is not None:
                w = ops[winner]
                results[i] = _ack(op, protocol.REJECTED, "conflict: superseded by op " + str(winner)
                                  + " (" + w["shard"] + ", prio " + str(w.get("prio")) + ")")
                continue
            for k in keys:
                claimed[k] = i
            keep.append(i)
        for kind in ("deactivate", "adjust", "activate"):
            for i in keep:  # keep is already strongest first
                if ops[i]["op"] == kind:
                    results[i] = self._do(ops[i], now)
        if lease_s is not None:
            self._lease_s = lease_s
        return results

    def _do(self, op, now):
        kind = op["op"]
        try:
            if kind == "deactivate":
                return self._deactivate_op(op, now)
            if kind == "adjust":
                return self._adjust_op(op, now)
            return self._activate_op(op, now)
        except MemoryError:
            return _ack(op, protocol.FAILED, "out of memory while applying the op")

    def _deactivate_op(self, op, now):
        entry = self.entries.get(op["shard"])
        if entry is None:
            return _ack(op, protocol.DEACTIVATED, "was not active")
        self._remove(entry, now, "deactivated by the provider")
        return _ack(op, protocol.DEACTIVATED)

    def _adjust_op(self, op, now):
        entry = self.entries.get(op["shard"])
        if entry is None:
            return _ack(op, protocol.REJECTED, "shard is not active")
        if entry.life.state == BROKEN:
            return _ack(op, protocol.REJECTED, "shard is broken; activate it again to reset it")
        reason = self._over_budget(op, (entry.id,))
        if reason is not None:
            return _ack(op, protocol.REJECTED, reason)
        used = self._heap_b(entry)
        if used is not None and used > op["mem_kb"] * 1024:
            return _ack(op, protocol.REJECTED, "mem_kb " + str(op["mem_kb"]) + " is below the "
                        + str(governor.kb_up(used)) + " kb the shard already holds")
        self._set_op(entry, op, now)
        if entry.life.state == ERRORED:
            return _ack(op, protocol.DEFERRED, "shard is waiting to restart; the new limits apply then")
        if entry.inst is not None:
            try:
                entry.inst.configure(self._budget(entry))
            except Exception as e:
                self._fail(entry, now, "configure raised " + _describe(e))
                return _ack(op, protocol.FAILED, entry.health.last_error)
        return _ack(op, protocol.ADJUSTED)

    def _activate_op(self, op, now):
        shard = op["shard"]
        entry = self.entries.get(shard)
        if entry is not None and entry.life.state != BROKEN and entry.op.get("module") == op["module"]:
            # Already there with the same code: only the limits can change.
            ack = self._adjust_op(op, now)
            if ack["code"] == protocol.ADJUSTED:
                ack["code"] = protocol.ACTIVATED
            return ack
        displaced = []
        if entry is not None:
            displaced.append(entry)
        holder = self._slot_holder(op.get("slot"), shard)
        if holder is not None:
            if _rank(holder.op) > _rank(op):
                return _ack(op, protocol.REJECTED, "conflict: slot " + op["slot"] + " is held by "
                            + holder.id + " at prio " + holder.op["prio"])
            displaced.append(holder)
        reason = self._over_budget(op, [e.id for e in displaced])
        if reason is not None:
            return _ack(op, protocol.REJECTED, reason)
        saved = []
        for old in displaced:
            if old.life.state != BROKEN:
                saved.append(old.op)
            self._remove(old, now, "replaced by " + shard)
        code, reason = self._activate(op, now)
        if code == protocol.REJECTED and saved:
            # Put back what the failed replacement displaced.
            for old_op in saved:
                self._activate(old_op, now)
            reason += "; previous shard restored"
        return _ack(op, code, reason)

    def _slot_holder(self, slot, shard):
        if not slot:
            return None
        for entry in self.entries.values():
            if entry.id != shard and entry.op.get("slot") == slot and entry.life.is_live():
                return entry
        return None

    def _over_budget(self, op, excluding):
        """Reason why ``op`` does not fit next to the other live shards, or None."""
        for key in _LIMIT_KEYS:
            cap = self.caps.get(key)
            if cap is None:
                continue
            used = 0
            for entry in self.entries.values():
                if entry.id not in excluding and entry.life.is_live():
                    used += entry.op[key]
            if used + op[key] > cap:
                return ("over budget: " + key + " " + str(op[key]) + " requested, "
                        + str(used) + " of " + str(cap) + " in use")
        return None

    # ---- activation and removal ------------------------------------------------
    def _activate(self, op, now, alt_of=None):
        """Load and start ``op``'s shard; return (code, reason)."""
        shard = op["shard"]
        reason = self.mem.before_load(shard, op["mem_kb"])
        if reason is not None:
            return protocol.REJECTED, reason
        name = op["module"]
        try:
            module, load_b = loader.load(name)
        except loader.LoadError as e:
            return protocol.REJECTED, e.reason
        reason = self.mem.after_load(shard, load_b, op["mem_kb"])
        if reason is not None:
            module = None
            self._unload_code(name)
            return protocol.REJECTED, reason
        entry = _Entry(op, self._sink)
        entry.module = module
        entry.code_b = load_b
        entry.alt_of = alt_of
        entry.bucket = governor.TokenBucket(op["bw_kbps"], self.clock)
        self._set_op(entry, op, now)
        self.entries[shard] = entry
        entry.life.fire("load", name)
        if self._start(entry, now):
            return protocol.ACTIVATED, ""
        return protocol.FAILED, entry.health.last_error

    def _set_op(self, entry, op, now):
        new = dict(entry.op)
        for key in op:
            new[key] = op[key]
        entry.op = new
        entry.expires = now + new["dur_s"] * 1000 if new.get("dur_s") else None
        if entry.bucket is not None:
            entry.bucket.set_rate(new["bw_kbps"])
        self.cpu.set_weight(entry.id, new["cpu"])

    def _budget(self, entry):
        op = entry.op
        return {
            "cpu": op["cpu"],
            "slice_ms": self.cpu.slice_ms(op["cpu"]),
            "mem_kb": self.mem.limit(op["mem_kb"]),
            "bw_kbps": op["bw_kbps"],
            "prio": op["prio"],
            "slot": op.get("slot"),
        }

    def _start(self, entry, now):
        """Create, configure and start a fresh instance; False if it failed."""
        entry.life.fire("restart" if entry.life.state == ERRORED else "start")
        entry.restart_at = None
        before = self.mem.measure()
        inst = None
        try:
            inst = entry.module.Shard(entry.id)
            inst.bw = entry.bucket
            inst.clock = self.clock
            inst.configure(self._budget(entry))
            inst.start()
        except Exception as e:
            entry.inst = inst  # so _fail can call its stop()
            inst = None
            self._fail(entry, now, "start raised " + _describe(e))
            return False
        entry.inst = inst
        inst = None
        after = self.mem.measure()
        entry.data_b = 0 if before is None else after - before
        entry.life.fire("started")
        entry.health.beat(now)
        entry.checked_ms = now
        if hasattr(entry.inst, "step"):
            self.cpu.add(entry.id, entry.op["cpu"], entry.inst.period_ms, now)
        return True

    def _stop_instance(self, entry):
        """Call the instance's stop(); return a reason if it raised."""
        inst = entry.inst
        entry.inst = None
        self.cpu.remove(entry.id)
        if inst is None:
            return None
        try:
            inst.stop()
        except Exception as e:
            return "stop raised " + _describe(e)
        return None

    def _fail(self, entry, now, reason):
        """Contain a failure: stop the instance, then restart later or give up."""
        self._stop_instance(entry)
        entry.data_b = 0
        entry.life.fire("fail", reason)
        verdict, value = entry.health.failure(now, reason, self.policy)
        if verdict != GIVE_UP:
            entry.restart_at = now + value
            self.events.emit(entry.id, "restart_in", now, str(value) + " ms after: " + reason)
            return
        self._give_up(entry, now, str(value) + " failures within "
                      + str(self.policy.window_ms // 1000) + " s; last: " + reason)

    def _give_up(self, entry, now, reason):
        entry.life.fire("give_up", reason)
        name = entry.op["module"]
        entry.module = None
        entry.bucket = None
        entry.restart_at = None
        self._unload_code(name)
        alt = entry.op.get("alt")
        if not alt or entry.alt_of is not None:
            return
        other = self.entries.get(alt)
        if other is not None and other.life.is_live():
            self.events.emit(entry.id, "failover_failed", now, "alternate " + alt + " is already active")
            return
        if other is not None:
            del self.entries[alt]  # a broken alternate is reset by the failover
        alt_op = dict(entry.op)
        alt_op["shard"] = alt
        alt_op["module"] = self._module_for(alt)
        alt_op["alt"] = None
        self.events.emit(entry.id, "failover", now, "switching to " + alt)
        code, why = self._activate(alt_op, now, entry.id)
        alt_entry = self.entries.get(alt)
        if alt_entry is not None:
            alt_entry.expires = entry.expires  # serves the same (maybe temporary) op
        if code == protocol.REJECTED:
            self.events.emit(entry.id, "failover_failed", now, why)

    def _module_for(self, shard):
        known = self._modules.get(shard)
        if known:
            return known
        return loader.PACKAGE + shard.replace("-", "_")

    def _remove(self, entry, now, reason):
        """Stop and unload a shard, whatever its state, and forget it."""
        before = self.mem.measure()
        state = entry.life.state
        if state == RUNNING:
            entry.life.fire("stop", reason)
            err = self._stop_instance(entry)
            if err is None:
                entry.life.fire("stopped")
            else:
                entry.life.fire("fail", err)
        else:
            self._stop_instance(entry)
        if entry.life.state == BROKEN:
            entry.life.fire("reset", reason)
        elif entry.life.state != ABSENT:
            entry.life.fire("unload", reason)
        del self.entries[entry.id]
        name = entry.op["module"]
        had_code = entry.module is not None
        entry.module = None
        entry.bucket = None
        after = self._unload_code(name) if had_code else self.mem.measure()
        if before is not None:
            self.events.emit(entry.id, "unloaded", now, "heap " + str(before - after) + " b freed")

    def _unload_code(self, name):
        # Two shard ids may share one module: unload only when none uses it.
        for other in self.entries.values():
            if other.module is not None and other.op.get("module") == name:
                return self.mem.measure()
        return loader.unload(name)

    # ---- running ----------------------------------------------------------------
    def tick(self):
        """One round of lease checks, restarts, heartbeats and shard steps."""
        now = self._now()
        self._expire(now)
        for entry in list(self.entries.values()):
            if entry.restart_at is not None and now >= entry.restart_at and entry.life.state == ERRORED:
                entry.health.restarts += 1
                self._start(entry, now)
        self._heartbeats(now)
        self._steps()

    async def run(self, period_ms=50):
        import asyncio

        self._running = True
        while self._running:
            self.tick()
            await asyncio.sleep(period_ms / 1000)

    def stop_running(self):
        self._running = False

    def _heartbeats(self, now):
        for entry in list(self.entries.values()):
            if entry.inst is None or entry.life.state != RUNNING:
                continue
            if now - entry.checked_ms < self.policy.heartbeat_ms:
                continue
            entry.checked_ms = now
            try:
                state = entry.inst.health()
                ok = isinstance(state, dict) and state.get("ok", True) is not False
                why = "health reported not ok: " + str(state)
            except Exception as e:
                ok = False
                why = "health raised " + _describe(e)
            if ok:
                entry.health.beat(now)
            else:
                self._fail(entry, now, why)

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
            self._fail(entry, now, "step raised " + err)
            return
        if before is not None:
            entry.data_b += self.mem.measure() - before
        verdict = self.cpu.charge(entry.id, elapsed, now)
        slice_ms = self.cpu.slice_ms(entry.op["cpu"])
        if verdict == governor.STOP:
            self._fail(entry, now, "cpu: step held the loop " + str(elapsed) + " ms (slice "
                       + str(slice_ms) + " ms), " + str(self.cpu.max_overruns) + " times in a row")
            return
        if verdict == governor.THROTTLE:
            self.events.emit(entry.id, "throttled", now, "step took " + str(elapsed)
                             + " ms, slice " + str(slice_ms) + " ms")
        used = self._heap_b(entry)
        if used is not None and used > entry.op["mem_kb"] * 1024:
            self._fail(entry, now, "memory: holds " + str(governor.kb_up(used))
                       + " kb, over its mem_kb " + str(entry.op["mem_kb"]))
            return
        entry.health.beat(now)

    def _heap_b(self, entry):
        if entry.code_b is None:
            return None
        return entry.code_b + entry.data_b

    # ---- leases and the baseline --------------------------------------------------
    def set_baseline(self, ops):
        """Remember the agreement's baseline profile (the activate ops the
        device returns to when temporary ops end or the provider is lost)."""
        base = {}
        for op in ops:
            if isinstance(op, dict) and op.get("op") == "activate" and check_op(op) is None:
                op = dict(op)
                op["dur_s"] = 0
                base[op["shard"]] = op
                self._modules[op["shard"]] = op["module"]
        self._baseline = base

    def _expire(self, now):
        expired = []
        for entry in self.entries.values():
            if entry.expires is not None and now >= entry.expires:
                expired.append(entry)
        if not expired:
            return
        names = [e.id for e in expired]
        names.sort()
        for entry in expired:
            base = self._baseline.get(entry.id)
            if base is not None and entry.life.is_live():
                self._set_op(entry, base, now)  # back to the baseline limits
                if entry.inst is not None:
                    try:
                        entry.inst.configure(self._budget(entry))
                    except Exception as e:
                        self._fail(entry, now, "configure raised " + _describe(e))
            else:
                self._remove(entry, now, "lease expired")
        self._restore_baseline(now, "lease expired: " + ", ".join(names))

    def provider_lost_for(self, seconds):
        """The agent calls this while the provider is unreachable. Past the
        lease, drop every temporary op and return to the baseline. True if it
        fell back now."""
        if self._lease_s is None or seconds <= self._lease_s:
            return False
        now = self._now()
        lease = self._lease_s
        self._lease_s = None  # one fallback per lease
        for entry in list(self.entries.values()):
            base = self._baseline.get(entry.id)
            serves_base = entry.alt_of is not None and entry.alt_of in self._baseline
            if base is not None:
                if entry.life.is_live() and entry.op != base:
                    self._set_op(entry, base, now)
                    if entry.inst is not None:
                        try:
                            entry.inst.configure(self._budget(entry))
                        except Exception as e:
                            self._fail(entry, now, "configure raised " + _describe(e))
            elif not serves_base:
                self._remove(entry, now, "provider lost")
            else:
                entry.expires = None
        self._restore_baseline(now, "provider unreachable " + str(seconds) + " s > lease "
                               + str(lease) + " s")
        return True

    def _restore_baseline(self, now, why):
        """Activate baseline shards that are missing and whose slot is free."""
        started = []
        for shard in sorted(self._baseline):
            op = self._baseline[shard]
            if shard in self.entries:
                continue  # live, errored or broken ("until told otherwise")
            if self._slot_holder(op.get("slot"), shard) is not None:
                continue
            if self._over_budget(op, ()) is None:
                code, reason = self._activate(op, now)
                started.append(shard + ":" + code + (" (" + reason + ")" if reason else ""))
        self.fallbacks += 1
        self.events.emit("*", "fallback", now, why + "; baseline " + (", ".join(started) or "unchanged"))

    # ---- reporting ------------------------------------------------------------------
    def report(self):
        """{shard id: state, limits in force, heap, errors, ...} for the provider."""
        now = self._now()
        out = {}
        for shard in self.entries:
            entry = self.entries[shard]
            op = entry.op
            live = entry.life.is_live()
            info = entry.health.snapshot(now)
            info["state"] = entry.life.state
            info["slot"] = op.get("slot")
            info["ver"] = op.get("ver")
            info["prio"] = op.get("prio")
            info["limits"] = self._limits(entry) if live else {}
            used = self._heap_b(entry)
            info["heap_kb"] = None if used is None else (governor.kb_up(used) if live else 0)
            info["code_kb"] = None if entry.code_b is None else governor.kb_up(entry.code_b)
            info["expires_in_s"] = None if entry.expires is None else (entry.expires - now + 999) // 1000
            info["alt_of"] = entry.alt_of
            info["restart_in_ms"] = None if entry.restart_at is None else entry.restart_at - now
            slot = self.cpu.slots.get(shard)
            if slot is not None:
                info["cpu_ms"] = slot.cpu_ms
                info["throttled"] = slot.throttled_until is not None
                info["throttles"] = slot.throttles
            if entry.bucket is not None:
                info["bw_passed"] = entry.bucket.passed
                info["bw_refused"] = entry.bucket.refused
            out[shard] = info
        return out

    def _limits(self, entry):
        # What is really enforced here: the weight and slice the scheduler
        # uses, the heap limit only where the heap can be measured.
        op = entry.op
        return {
            "cpu": op["cpu"],
            "slice_ms": self.cpu.slice_ms(op["cpu"]),
            "mem_kb": self.mem.limit(op["mem_kb"]),
            "mem_reserved_kb": op["mem_kb"],
            "heap_floor_kb": self.mem.floor(),
            "bw_kbps": entry.bucket.rate_kbps if entry.bucket is not None else 0,
        }

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
