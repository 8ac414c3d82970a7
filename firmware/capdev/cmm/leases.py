# The shard manager's lease handling: temporary ops that expire, the fall
# back to the agreement's baseline when the provider stays out of reach.
# Cold like ops.py (imported when a lease runs out); takes the manager as ``m``.
from capdev.cmm.manager import _describe
from capdev.cmm.ops import activate, budget, fail, over_budget, remove, set_op, slot_holder


def expire(m, now):
    expired = []
    for entry in m.entries.values():
        if entry.expires is not None and now >= entry.expires:
            expired.append(entry)
    if not expired:
        return
    names = [e.id for e in expired]
    names.sort()
    for entry in expired:
        base = m._baseline.get(entry.id)
        if base is not None and entry.life.is_live():
            set_op(m, entry, base, now)  # back to the baseline limits
            if entry.inst is not None:
                try:
                    entry.inst.configure(budget(m, entry))
                except Exception as e:
                    fail(m, entry, now, "configure raised " + _describe(e))
        else:
            remove(m, entry, now, "lease expired")
    restore_baseline(m, now, "lease expired: " + ", ".join(names))


def provider_lost_for(m, seconds):
    """The agent calls this while the provider is unreachable. Past the
    lease, drop every temporary op and return to the baseline. True if it
    fell back now."""
    if m._lease_s is None or seconds <= m._lease_s:
        return False
    now = m._now()
    lease = m._lease_s
    m._lease_s = None  # one fallback per lease
    for entry in list(m.entries.values()):
        base = m._baseline.get(entry.id)
        serves_base = entry.alt_of is not None and entry.alt_of in m._baseline
        if base is not None:
            if entry.life.is_live() and entry.op != base:
                set_op(m, entry, base, now)
                if entry.inst is not None:
                    try:
                        entry.inst.configure(budget(m, entry))
                    except Exception as e:
                        fail(m, entry, now, "configure raised " + _describe(e))
        elif not serves_base:
            remove(m, entry, now, "provider lost")
        else:
            entry.expires = None
    restore_baseline(m, now, "provider unreachable " + str(seconds) + " s > lease "
                           + str(lease) + " s")
    return True


def restore_baseline(m, now, why):
    """Activate baseline shards that are missing and whose slot is free."""
    started = []
    for shard in sorted(m._baseline):
        op = m._baseline[shard]
        if shard in m.entries:
            continue  # live, errored or broken ("until told otherwise")
        if slot_holder(m, op.get("slot"), shard) is not None:
            continue
        if over_budget(m, op, ()) is None:
            code, reason = activate(m, op, now)
            started.append(shard + ":" + code + (" (" + reason + ")" if reason else ""))
    m.fallbacks += 1
    m.events.emit("*", "fallback", now, why + "; baseline " + (", ".join(started) or "unchanged"))

# ---- reporting ------------------------------------------------------------------
