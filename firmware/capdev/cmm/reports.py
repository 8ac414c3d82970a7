# The shard manager's report: per shard, its state, the limits actually in
# force, heap, errors and latency. Cold like ops.py: built for health and
# state messages, then unloaded. Takes the manager as ``m``.
from capdev.cmm import governor


def report(m):
    """{shard id: state, limits in force, heap, errors, ...} for the provider."""
    now = m._now()
    out = {}
    for shard in m.entries:
        entry = m.entries[shard]
        op = entry.op
        live = entry.life.is_live()
        info = snapshot(entry.health, now)
        info["state"] = entry.life.state
        info["slot"] = op.get("slot")
        info["ver"] = op.get("ver")
        info["prio"] = op.get("prio")
        info["limits"] = limits(m, entry) if live else {}
        info["heap_kb"] = heap_kb(m, entry, live)
        info["code_kb"] = None if entry.code_b is None else governor.kb_up(entry.code_b)
        info["expires_in_s"] = expires_in_s(entry, now)
        info["alt_of"] = entry.alt_of
        info["restart_in_ms"] = None if entry.restart_at is None else entry.restart_at - now
        slot = m.cpu.slots.get(shard)
        if slot is not None:
            info["cpu_ms"] = slot.cpu_ms
            info["throttled"] = slot.throttled_until is not None
            info["throttles"] = slot.throttles
        if entry.bucket is not None:
            info["bw_passed"] = entry.bucket.passed
            info["bw_refused"] = entry.bucket.refused
        out[shard] = info
    return out


def summary(m):
    """{shard id: state, heap, expiry, failover}: the part of the report the
    agent's state and health messages carry, built without the rest."""
    now = m._now()
    out = {}
    for shard in m.entries:
        entry = m.entries[shard]
        out[shard] = {"state": entry.life.state, "heap_kb": heap_kb(m, entry, entry.life.is_live()),
                      "expires_in_s": expires_in_s(entry, now), "alt_of": entry.alt_of}
    return out


def heap_kb(m, entry, live):
    used = m._heap_b(entry)
    return None if used is None else (governor.kb_up(used) if live else 0)


def expires_in_s(entry, now):
    return None if entry.expires is None else (entry.expires - now + 999) // 1000


def snapshot(record, now):
    """The HealthRecord ``record`` as the report shows it."""
    return {
        "errors": record.errors,
        "restarts": record.restarts,
        "last_error": record.last_error,
        "beat_age_ms": None if record.beat_ms is None else now - record.beat_ms,
        "steps": record.steps,
        "lat_ms": {"last": record.lat_last, "avg": lat_avg(record), "max": record.lat_max},
    }


def lat_avg(record):
    # The EWMA is kept scaled by 8 (see HealthRecord.latency); rounded here.
    return (record.lat_avg8 + 4) >> 3


def limits(m, entry):
    # What is really enforced here: the weight and slice the scheduler
    # uses, the heap limit and floor only where the heap can be measured.
    op = entry.op
    enforced = m.mem.enforced
    return {
        "cpu": op["cpu"],
        "slice_ms": m.cpu.slice_ms(op["cpu"]),
        "mem_kb": op["mem_kb"] if enforced else governor.UNENFORCED,
        "mem_reserved_kb": op["mem_kb"],
        "heap_floor_kb": m.mem.floor_kb if enforced else governor.UNENFORCED,
        "bw_kbps": entry.bucket.rate_kbps if entry.bucket is not None else 0,
    }
