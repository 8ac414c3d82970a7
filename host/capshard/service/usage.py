"""Usage accounting: what each device ran, for how long, from the instruction
log alone (so a bill can always be re-derived from the log).

A shard runs from the ack of the instruction that activated (or adjusted) it
until the first of: an ack that deactivates it, a later full state without
it, a later activate/adjust of it (a new interval starts), or its lease
(``dur_s`` from receipt) running out on the device. Only operations the
device acked as done count; rejected and timed-out instructions changed
nothing. Baseline shards (``dur_s`` 0) run until removed.

Resource-seconds are the granted budget times the seconds: CPU weight-seconds,
memory KiB-seconds and bandwidth kbit/s-seconds (= kbit).
"""

import math
from dataclasses import dataclass

from .store import FAILED, SUCCEEDED

DONE = {"activate": "activated", "adjust": "adjusted", "deactivate": "deactivated"}


@dataclass
class Interval:
    device_id: str
    shard: str
    tier: str | None
    start: float
    end: float           # math.inf while still running (no lease)
    cpu: int
    mem_kb: int
    bw_kbps: int
    source: str          # instruction id that started it


def intervals(instructions):
    """Every shard-run interval the log proves, per device, in time order."""
    out = []
    by_device = {}
    for inst in instructions:
        if _get(inst, "state") in (SUCCEEDED, FAILED) and _get(inst, "acked_at") is not None:
            by_device.setdefault(_get(inst, "device_id"), []).append(inst)
    for device_id, items in sorted(by_device.items()):
        items.sort(key=lambda i: (_get(i, "acked_at"), _get(i, "seq")))
        running = {}   # shard -> Interval
        for inst in items:
            t = _get(inst, "acked_at")
            for sid in [s for s, iv in running.items() if iv.end <= t]:
                out.append(running.pop(sid))      # its lease ran out before this
            ops = _get(inst, "ops") or []
            done = _done_ops(_get(inst, "ack") or {})
            if _get(inst, "full"):
                wanted = {op["shard"] for op in ops}
                for sid in [s for s in running if s not in wanted]:
                    out.append(_close(running.pop(sid), t))
            for op in ops:
                sid, verb = op["shard"], op["op"]
                if (sid, verb) not in done:
                    continue
                if sid in running:
                    out.append(_close(running.pop(sid), t))
                if verb in ("activate", "adjust"):
                    dur = int(op.get("dur_s") or 0)
                    running[sid] = Interval(device_id, sid, _get(inst, "tier"), t, t + dur if dur else math.inf,
                                            int(op.get("cpu") or 0), int(op.get("mem_kb") or 0),
                                            int(op.get("bw_kbps") or 0), _get(inst, "id"))
        out.extend(running.values())
    return out


def _done_ops(ack):
    return {(r.get("shard"), r.get("op")) for r in ack.get("results") or []
            if r.get("code") == DONE.get(r.get("op"))}


def _close(iv, t):
    iv.end = min(iv.end, t)
    return iv


def _get(obj, name):
    if isinstance(obj, dict):
        return obj["full_state"] if name == "full" and "full" not in obj else obj.get(name)
    return getattr(obj, name)


def summarize(instructions, start, end, device_id=None):
    """Usage per (device, shard, tier) within [start, end]: a dict with
    ``rows`` (sorted) and ``totals``."""
    rows = {}
    for iv in intervals(instructions):
        if device_id and iv.device_id != device_id:
            continue
        secs = max(0.0, min(iv.end, end) - max(iv.start, start))
        if secs <= 0:
            continue
        key = (iv.device_id, iv.shard, iv.tier or "")
        r = rows.setdefault(key, {"device": iv.device_id, "shard": iv.shard, "tier": iv.tier or "",
                                  "shard_seconds": 0.0, "cpu_seconds": 0.0, "mem_kb_seconds": 0.0,
                                  "bw_kbit": 0.0, "intervals": 0})
        r["shard_seconds"] += secs
        r["cpu_seconds"] += secs * iv.cpu
        r["mem_kb_seconds"] += secs * iv.mem_kb
        r["bw_kbit"] += secs * iv.bw_kbps
        r["intervals"] += 1
    ordered = [rows[k] for k in sorted(rows)]
    totals = {k: sum(r[k] for r in ordered) for k in
              ("shard_seconds", "cpu_seconds", "mem_kb_seconds", "bw_kbit", "intervals")}
    by_tier = {}
    for r in ordered:
        t = by_tier.setdefault(r["tier"], {"shard_seconds": 0.0, "cpu_seconds": 0.0, "mem_kb_seconds": 0.0,
                                           "bw_kbit": 0.0})
        for k in t:
            t[k] += r[k]
    return {"from": start, "to": end, "rows": ordered, "totals": totals, "by_tier": by_tier}


CSV_COLUMNS = ("device", "shard", "tier", "shard_seconds", "cpu_seconds", "mem_kb_seconds", "bw_kbit", "intervals")
