"""What the operator commands show, as plain data (the --json output) and as
rich tables. One function per view; the commands only parse arguments."""

import json
import os
import sys
import time

from .fleet import DeviceRecord, profiles_match
from .store import OPEN_STATES


def device_summary(row):
    rec = DeviceRecord.from_row(row)
    return {
        "device": rec.device_id, "online": rec.online, "tier": rec.tier,
        "board": row["board"], "runtime": row["runtime"],
        "desired_version": rec.desired_version, "converged": rec.desired_version > 0 and profiles_match(rec.desired, rec.reported),
        "desired": sorted(rec.desired), "reported": sorted(rec.reported),
        "expires_at": rec.desired_expires_at, "last_seen": rec.last_seen, "pending_work": rec.pending,
    }


def devices_view(store):
    return [device_summary(r) for r in store.list_devices()]


def device_detail(store, device_id, instructions=10, events=15):
    row = store.get_device(device_id)
    if row is None:
        return None
    rec = DeviceRecord.from_row(row)
    shards = []
    for sid in sorted(set(rec.desired) | set(rec.reported)):
        want, have = rec.desired.get(sid), rec.reported.get(sid)
        shards.append({"shard": sid, "desired": want, "reported": have,
                       "match": bool(want and have and profiles_match({sid: want}, {sid: have}))})
    insts = store.instructions(device_id, limit=instructions, newest_first=True)
    evs = store.events(device_id=device_id)[-events:]
    return {
        **device_summary(row),
        "birth": rec.birth,
        "shards": shards,
        "explanations": row.get("explanations") or [],
        "needs": rec.needs, "needs_at": row["needs_at"],
        "health": rec.health, "health_at": row["health_at"],
        "instructions": [{"id": i["id"], "seq": i["seq"], "state": i["state"], "full": bool(i["full_state"]),
                          "ops": [f"{o['op']} {o['shard']}" for o in i["ops"]], "attempts": i["attempts"],
                          "sent_at": i["sent_at"], "acked_at": i["acked_at"], "reason": i["reason"] or "",
                          "results": [f"{r.get('shard')}: {r.get('code')} {r.get('reason') or ''}".rstrip()
                                      for r in (i["ack"] or {}).get("results") or []],
                          "open": i["state"] in OPEN_STATES} for i in insts],
        "events": [{"t": e["t"], "kind": e["kind"], "text": e["text"]} for e in evs],
    }


def open_store_for(command, db, must_exist=True):
    """The fleet store for a CLI command, or None after saying why on stderr.
    ``must_exist``: a SQLite file that is not there is an error (a mistyped
    path would otherwise show an empty fleet, and leave a new file behind)."""
    from .store import StoreError, open_store, sqlite_path, store_url

    url = store_url(db)
    path = sqlite_path(url)
    if must_exist and path is not None and path != ":memory:" and not os.path.exists(path):
        print(f"capshard {command}: no fleet store at {path} (give --db, or set $CAPSHARD_DB; "
              "`capshard dsa run` creates it)", file=sys.stderr)
        return None
    try:
        return open_store(db)
    except StoreError as e:
        print(f"capshard {command}: {e}", file=sys.stderr)
        return None


def add_db_argument(p):
    p.add_argument("--db", help="fleet store: a SQLite path or postgresql:// URL "
                                "(default: $CAPSHARD_DB, else capshard-fleet.sqlite)")


# ---- output -----------------------------------------------------------------
def print_json(data, out=None):
    out = out or sys.stdout
    json.dump(data, out, indent=2, sort_keys=True, default=str)
    out.write("\n")


def when(t):
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def ago(t, now=None):
    if t is None:
        return "-"
    s = max(0, int((now or time.time()) - t))
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


def console():
    from rich.console import Console
    return Console()


def table(title, columns, rows):
    from rich.table import Table
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[str(v) for v in r])
    return t


def render_devices(devices):
    rows = [(d["device"], "yes" if d["online"] else "no", d["tier"] or "(default)", d["board"] or "-",
             d["runtime"] or "-", d["desired_version"], "yes" if d["converged"] else "NO",
             ", ".join(d["reported"]) or "-", ago(d["last_seen"])) for d in devices]
    return table(f"{len(devices)} device(s)", ["device", "online", "tier", "board", "runtime", "desired v",
                                                "converged", "running", "last seen"], rows)


def render_device(d):
    from rich.console import Group
    parts = [f"[bold]{d['device']}[/]  online={d['online']}  tier={d['tier'] or '(default)'}  "
             f"board={d['board']}  runtime={d['runtime']}  desired v{d['desired_version']}  "
             f"converged={d['converged']}  expires={when(d['expires_at'])}"]

    def brief(op):
        return "-" if not op else f"cpu={op.get('cpu')} mem={op.get('mem_kb')} bw={op.get('bw_kbps')} " \
                                  f"prio={op.get('prio')} dur={op.get('dur_s')}"
    parts.append(table("desired vs reported", ["shard", "desired", "reported", "match"],
                       [(s["shard"], brief(s["desired"]), brief(s["reported"]), "yes" if s["match"] else "NO")
                        for s in d["shards"]]))
    if d["explanations"]:
        parts.append("why: " + "; ".join(d["explanations"]))
    needs = d["needs"] or {}
    parts.append(table(f"needs ({ago(d['needs_at'])})", ["class", "bw kbit/s", "lat ms", "flows", "conf"],
                       [(c, v.get("bw_kbps"), v.get("lat_ms"), v.get("flows"), v.get("conf"))
                        for c, v in sorted((needs.get("classes") or {}).items())]))
    if needs.get("security"):
        parts.append(f"security: {needs['security'].get('level')}")
    parts.append(table("instructions (newest first)", ["seq", "id", "state", "ops", "attempts", "sent", "outcome"],
                       [(i["seq"], i["id"], i["state"], "full" if i["full"] else ", ".join(i["ops"]),
                         i["attempts"], when(i["sent_at"]), i["reason"] or "; ".join(i["results"]))
                        for i in d["instructions"]]))
    health = d["health"] or {}
    parts.append(table(f"health ({ago(d['health_at'])})", ["shard", "state", "heap kB", "expires in s"],
                       [(s, v.get("state"), v.get("heap_kb"), v.get("expires_in_s"))
                        for s, v in sorted((health.get("shards") or {}).items())]))
    return Group(*parts)
