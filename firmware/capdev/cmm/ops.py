# The shard manager's cold half: applying operations, starting, failing and
# removing shards, the baseline (leases.py and reports.py hold the rest).
# ShardManager (manager.py) keeps the hot loop (ticks, steps, heartbeats)
# resident and calls in here for the rest; the agent unloads these modules
# between uses, so on a small heap their code is only in RAM while an
# instruction, a failure, a lease or a report needs it.
# Every function takes the ShardManager as ``m``, but for the parts of the
# governor and health records that only run here (heap admission, adding a
# CPU slot, the failure policy): those take the object they work on.
from capdev import protocol
from capdev.cmm import governor, loader
from capdev.cmm.lifecycle import ABSENT, BROKEN, ERRORED, RUNNING
from capdev.cmm.manager import _describe, _Entry

_LIMIT_KEYS = ("cpu", "mem_kb", "bw_kbps")
RESTART = "restart"
GIVE_UP = "give_up"


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



def apply(m, ops, lease_s=None):
    """Carry out ``ops``; return one ack result per op, in order.

    Conflicts (two activations for one slot) are settled by prio, then
    recency (the later op wins); the loser is rejected with the reason.
    Deactivations run first, then adjustments, then activations from the
    highest priority down, so important shards get the resources first.
    """
    now = m._now()
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
                m._modules[op["shard"]] = op.get("module") or m._modules.get(op["shard"])
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
                results[i] = do(m, ops[i], now)
    if lease_s is not None:
        m._lease_s = lease_s
    return results


def do(m, op, now):
    kind = op["op"]
    try:
        if kind == "deactivate":
            return deactivate_op(m, op, now)
        if kind == "adjust":
            return adjust_op(m, op, now)
        return activate_op(m, op, now)
    except MemoryError:
        return _ack(op, protocol.FAILED, "out of memory while applying the op")


def deactivate_op(m, op, now):
    entry = m.entries.get(op["shard"])
    if entry is None:
        return _ack(op, protocol.DEACTIVATED, "was not active")
    remove(m, entry, now, "deactivated by the provider")
    return _ack(op, protocol.DEACTIVATED)


def adjust_op(m, op, now):
    entry = m.entries.get(op["shard"])
    if entry is None:
        return _ack(op, protocol.REJECTED, "shard is not active")
    if entry.life.state == BROKEN:
        return _ack(op, protocol.REJECTED, "shard is broken; activate it again to reset it")
    reason = over_budget(m, op, (entry.id,))
    if reason is not None:
        return _ack(op, protocol.REJECTED, reason)
    used = m._heap_b(entry)
    if used is not None and used > op["mem_kb"] * 1024:
        return _ack(op, protocol.REJECTED, "mem_kb " + str(op["mem_kb"]) + " is below the "
                    + str(governor.kb_up(used)) + " kb the shard already holds")
    set_op(m, entry, op, now)
    if entry.life.state == ERRORED:
        return _ack(op, protocol.DEFERRED, "shard is waiting to restart; the new limits apply then")
    if entry.inst is not None:
        try:
            entry.inst.configure(budget(m, entry))
        except Exception as e:
            fail(m, entry, now, "configure raised " + _describe(e))
            return _ack(op, protocol.FAILED, entry.health.last_error)
    return _ack(op, protocol.ADJUSTED)


def activate_op(m, op, now):
    shard = op["shard"]
    entry = m.entries.get(shard)
    if entry is not None and entry.life.state != BROKEN and entry.op.get("module") == op["module"]:
        # Already there with the same code: only the limits can change.
        ack = adjust_op(m, op, now)
        if ack["code"] == protocol.ADJUSTED:
            ack["code"] = protocol.ACTIVATED
        return ack
    displaced = []
    if entry is not None:
        displaced.append(entry)
    holder = slot_holder(m, op.get("slot"), shard)
    if holder is not None:
        if _rank(holder.op) > _rank(op):
            return _ack(op, protocol.REJECTED, "conflict: slot " + op["slot"] + " is held by "
                        + holder.id + " at prio " + holder.op["prio"])
        displaced.append(holder)
    reason = over_budget(m, op, [e.id for e in displaced])
    if reason is not None:
        return _ack(op, protocol.REJECTED, reason)
    saved = []
    for old in displaced:
        if old.life.state != BROKEN:
            saved.append(old.op)
        remove(m, old, now, "replaced by " + shard)
    code, reason = activate(m, op, now)
    if code == protocol.REJECTED and saved:
        # Put back what the failed replacement displaced.
        for old_op in saved:
            activate(m, old_op, now)
        reason += "; previous shard restored"
    return _ack(op, code, reason)


def slot_holder(m, slot, shard):
    if not slot:
        return None
    for entry in m.entries.values():
        if entry.id != shard and entry.op.get("slot") == slot and entry.life.is_live():
            return entry
    return None


def over_budget(m, op, excluding):
    """Reason why ``op`` does not fit next to the other live shards, or None."""
    for key in _LIMIT_KEYS:
        cap = m.caps.get(key)
        if cap is None:
            continue
        used = 0
        for entry in m.entries.values():
            if entry.id not in excluding and entry.life.is_live():
                used += entry.op[key]
        if used + op[key] > cap:
            return ("over budget: " + key + " " + str(op[key]) + " requested, "
                    + str(used) + " of " + str(cap) + " in use")
    return None

# ---- activation and removal ------------------------------------------------

def activate(m, op, now, alt_of=None):
    """Load and start ``op``'s shard; return (code, reason)."""
    shard = op["shard"]
    reason = before_load(m.mem, shard, op["mem_kb"])
    if reason is not None:
        return protocol.REJECTED, reason
    name = op["module"]
    try:
        module, load_b = loader.load_within(name, op["mem_kb"] * 1024)
    except loader.LoadError as e:
        return protocol.REJECTED, e.reason
    reason = after_load(m.mem, shard, load_b, op["mem_kb"])
    if reason is not None:
        module = None
        unload_code(m, name)
        return protocol.REJECTED, reason
    entry = _Entry(op, m._sink)
    entry.module = module
    entry.code_b = load_b
    entry.alt_of = alt_of
    entry.bucket = governor.TokenBucket(op["bw_kbps"], m.clock)
    set_op(m, entry, op, now)
    m.entries[shard] = entry
    entry.life.fire("load", name)
    if start(m, entry, now):
        return protocol.ACTIVATED, ""
    return protocol.FAILED, entry.health.last_error


def before_load(mem, shard_id, mem_kb):
    """Reason to refuse loading a shard that may grow to ``mem_kb``, or None.
    ``mem``: the manager's MemoryGovernor."""
    if not mem.enforced:
        return None
    # In bytes: KiB rounded down first would refuse up to 1 KiB early.
    left = mem.free_b() - mem_kb * 1024
    if left < mem.floor_kb * 1024:
        return ("heap: loading " + shard_id + " with mem_kb " + str(mem_kb) + " would leave "
                + str(left // 1024) + " kb free, below the floor of " + str(mem.floor_kb) + " kb")
    return None


def after_load(mem, shard_id, load_bytes, mem_kb):
    """Reason to undo a load that already broke a limit, or None."""
    if not mem.enforced or load_bytes is None:
        return None
    if load_bytes > mem_kb * 1024:
        return ("heap: " + shard_id + " code takes " + str(governor.kb_up(load_bytes))
                + " kb, over its mem_kb " + str(mem_kb))
    free = mem.free_b()
    if free < mem.floor_kb * 1024:
        return ("heap: " + str(free // 1024) + " kb free after loading " + shard_id
                + ", below the floor of " + str(mem.floor_kb) + " kb")
    return None


def set_op(m, entry, op, now):
    new = op
    if entry.op is not op:  # merge: an adjust may carry only some fields
        new = dict(entry.op)
        for key in op:
            new[key] = op[key]
    entry.op = new  # op dicts are never changed in place, so they can be shared
    entry.expires = now + new["dur_s"] * 1000 if new.get("dur_s") else None
    if entry.bucket is not None:
        entry.bucket.set_rate(new["bw_kbps"])
    slot = m.cpu.slots.get(entry.id)
    if slot is not None:
        slot.weight = new["cpu"]


def budget(m, entry):
    op = entry.op
    return {
        "cpu": op["cpu"],
        "slice_ms": m.cpu.slice_ms(op["cpu"]),
        "mem_kb": op["mem_kb"] if m.mem.enforced else governor.UNENFORCED,
        "bw_kbps": op["bw_kbps"],
        "prio": op["prio"],
        "slot": op.get("slot"),
    }


def start(m, entry, now):
    """Create, configure and start a fresh instance; False if it failed."""
    entry.life.fire("restart" if entry.life.state == ERRORED else "start")
    entry.restart_at = None
    before = m.mem.measure()
    inst = None
    try:
        inst = entry.module.Shard(entry.id)
        inst.bw = entry.bucket
        inst.clock = m.clock
        inst.configure(budget(m, entry))
        inst.start()
    except Exception as e:
        entry.inst = inst  # so _fail can call its stop()
        inst = None
        fail(m, entry, now, "start raised " + _describe(e))
        return False
    entry.inst = inst
    inst = None
    after = m.mem.measure()
    entry.data_b = 0 if before is None else after - before
    entry.life.fire("started")
    entry.health.beat(now)
    entry.health.checked_ms = now
    if hasattr(entry.inst, "step"):
        schedule(m.cpu, entry.id, entry.op["cpu"], entry.inst.period_ms, now)
    return True


def schedule(cpu, key, weight, period_ms, now):
    """Give ``key`` a slot in the CpuScheduler ``cpu``."""
    # A newcomer starts at the lowest current pass so it neither starves
    # nor gets a burst of catch-up time.
    low = None
    for slot in cpu.slots.values():
        if low is None or slot.pass_ < low:
            low = slot.pass_
    cpu.slots[key] = governor.CpuSlot(weight, period_ms, now, low or 0)


def stop_instance(m, entry):
    """Call the instance's stop(); return a reason if it raised."""
    inst = entry.inst
    entry.inst = None
    m.cpu.slots.pop(entry.id, None)
    if inst is None:
        return None
    try:
        inst.stop()
    except Exception as e:
        return "stop raised " + _describe(e)
    return None


def fail(m, entry, now, reason):
    """Contain a failure: stop the instance, then restart later or give up."""
    stop_instance(m, entry)
    entry.data_b = 0
    entry.life.fire("fail", reason)
    verdict, value = failure(entry.health, now, reason, m.policy)
    if verdict != GIVE_UP:
        entry.restart_at = now + value
        m.events.emit(entry.id, "restart_in", now, str(value) + " ms after: " + reason)
        return
    give_up(m, entry, now, str(value) + " failures within "
                  + str(m.policy.window_ms // 1000) + " s; last: " + reason)


def failure(record, now, reason, policy):
    """Record a failure in the HealthRecord ``record``; return (RESTART,
    delay_ms) or (GIVE_UP, count) under the HealthPolicy ``policy``."""
    record.errors += 1
    record.last_error = reason
    keep = []
    for t in record.failures:
        if now - t < policy.window_ms:
            keep.append(t)
    keep.append(now)
    record.failures = keep
    n = len(keep)
    if n >= policy.max_failures:
        return GIVE_UP, n
    return RESTART, backoff(policy, n)


def backoff(policy, failures):
    """Delay before the restart that follows the ``failures``-th failure."""
    delay = policy.backoff_ms << (failures - 1)
    return delay if delay < policy.backoff_max_ms else policy.backoff_max_ms


def give_up(m, entry, now, reason):
    entry.life.fire("give_up", reason)
    name = entry.op["module"]
    entry.module = None
    entry.bucket = None
    entry.restart_at = None
    unload_code(m, name)
    alt = entry.op.get("alt")
    if not alt or entry.alt_of is not None:
        return
    other = m.entries.get(alt)
    if other is not None and other.life.is_live():
        m.events.emit(entry.id, "failover_failed", now, "alternate " + alt + " is already active")
        return
    if other is not None:
        del m.entries[alt]  # a broken alternate is reset by the failover
    alt_op = dict(entry.op)
    alt_op["shard"] = alt
    alt_op["module"] = entry.op.get("alt_module") or module_for(m, alt)
    alt_op["alt"] = None
    alt_op["alt_module"] = None
    m.events.emit(entry.id, "failover", now, "switching to " + alt)
    code, why = activate(m, alt_op, now, entry.id)
    alt_entry = m.entries.get(alt)
    if alt_entry is not None:
        alt_entry.expires = entry.expires  # serves the same (maybe temporary) op
    if code == protocol.REJECTED:
        m.events.emit(entry.id, "failover_failed", now, why)


def module_for(m, shard):
    known = m._modules.get(shard)
    if known:
        return known
    return loader.PACKAGE + shard.replace("-", "_")


def remove(m, entry, now, reason):
    """Stop and unload a shard, whatever its state, and forget it."""
    before = m.mem.measure()
    state = entry.life.state
    if state == RUNNING:
        entry.life.fire("stop", reason)
        err = stop_instance(m, entry)
        if err is None:
            entry.life.fire("stopped")
        else:
            entry.life.fire("fail", err)
    else:
        stop_instance(m, entry)
    if entry.life.state == BROKEN:
        entry.life.fire("reset", reason)
    elif entry.life.state != ABSENT:
        entry.life.fire("unload", reason)
    del m.entries[entry.id]
    name = entry.op["module"]
    had_code = entry.module is not None
    entry.module = None
    entry.bucket = None
    after = unload_code(m, name) if had_code else m.mem.measure()
    if before is not None:
        m.events.emit(entry.id, "unloaded", now, "heap " + str(before - after) + " b freed")


def unload_code(m, name):
    # Two shard ids may share one module: unload only when none uses it.
    for other in m.entries.values():
        if other.module is not None and other.op.get("module") == name:
            return m.mem.measure()
    return loader.unload(name)

# ---- running ----------------------------------------------------------------

def set_baseline(m, ops):
    """Remember the agreement's baseline profile (the activate ops the
    device returns to when temporary ops end or the provider is lost)."""
    base = {}
    for op in ops:
        if isinstance(op, dict) and op.get("op") == "activate" and check_op(op) is None:
            if op["dur_s"] != 0:
                op = dict(op)
                op["dur_s"] = 0
            base[op["shard"]] = op
            m._modules[op["shard"]] = op["module"]
    m._baseline = base
