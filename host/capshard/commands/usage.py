"""`capshard usage`: shard-seconds and resource-seconds per device, shard and
tier over a period, derived from the instruction log (table, --json, --csv)."""

import csv
import sys
import time
from datetime import datetime

from ..service import usage, views


def register(sub):
    p = sub.add_parser("usage", help="what devices ran and for how long (billing), over a period")
    views.add_db_argument(p)
    p.add_argument("--from", dest="start", default=None,
                   help="period start: epoch seconds, ISO date/time, or -DURATION like -1h, -30m (default: all)")
    p.add_argument("--to", dest="end", default=None, help="period end (same forms; default: now)")
    p.add_argument("--device", help="only this device")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable output")
    fmt.add_argument("--csv", action="store_true", help="CSV rows (with a header)")
    p.set_defaults(func=run)


def parse_time(text, now):
    """Epoch seconds, an ISO 8601 date/time (local time unless it says), or
    -N[smhd] relative to now."""
    if text is None:
        return None
    t = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if t.startswith("-") and t[-1:] in units:
        return now - float(t[1:-1]) * units[t[-1]]
    try:
        return float(t)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(t).timestamp()
    except ValueError:
        raise ValueError(f"cannot read time {text!r}: use epoch seconds, ISO 8601, or -1h / -30m") from None


def run(args):
    now = time.time()
    try:
        start = parse_time(args.start, now)
        end = parse_time(args.end, now)
    except ValueError as e:
        print(f"capshard usage: {e}", file=sys.stderr)
        return 2
    start = 0.0 if start is None else start
    end = now if end is None else min(end, now)   # nothing is billed in the future
    if end < start:
        print("capshard usage: --to is before --from", file=sys.stderr)
        return 2
    store = views.open_store_for("usage", args.db)
    if store is None:
        return 1
    try:
        report = usage.summarize(store.instructions(args.device), start, end, args.device)
    finally:
        store.close()
    if args.json:
        views.print_json(report)
    elif args.csv:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(usage.CSV_COLUMNS)
        for r in report["rows"]:
            w.writerow([_fmt(r[c]) for c in usage.CSV_COLUMNS])
    else:
        rows = [(r["device"], r["shard"], r["tier"] or "-", f"{r['shard_seconds']:.1f}", f"{r['cpu_seconds']:.1f}",
                 f"{r['mem_kb_seconds']:.1f}", f"{r['bw_kbit']:.1f}") for r in report["rows"]]
        t = report["totals"]
        rows.append(("TOTAL", "", "", f"{t['shard_seconds']:.1f}", f"{t['cpu_seconds']:.1f}",
                     f"{t['mem_kb_seconds']:.1f}", f"{t['bw_kbit']:.1f}"))
        views.console().print(views.table(
            f"usage {views.when(start) if start else 'since the start'} .. {views.when(end)}",
            ["device", "shard", "tier", "shard-s", "cpu-s", "mem KiB-s", "bw kbit"], rows))
    return 0


def _fmt(v):
    return repr(v) if isinstance(v, float) else v
