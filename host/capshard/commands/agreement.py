"""`capshard agreement assign TIER`: put one device, a group or the whole
fleet on a service tier. The running service re-plans each device; the
assignment is paced (--rate) so a large group does not become a storm."""

import fnmatch
import sys
import time

from ..catalog import DEFAULT_AGREEMENTS, DEFAULT_CATALOG, InputError, load_agreements, load_catalog
from ..service import views
from ..service.store import WORK_REPLAN


def register(sub):
    p = sub.add_parser("agreement", help="service agreements (tiers) of devices")
    asub = p.add_subparsers(dest="agreement_command", metavar="ACTION", required=True)
    a = asub.add_parser("assign", help="assign a tier to a device, a group (glob) or every device")
    a.add_argument("tier")
    who = a.add_mutually_exclusive_group(required=True)
    who.add_argument("--device", action="append", help="device id (repeatable)")
    who.add_argument("--group", help="glob over device ids, e.g. 'gw-*'")
    who.add_argument("--all", action="store_true", help="every device in the fleet store")
    a.add_argument("--rate", type=float, default=20.0, help="devices per second (default 20)")
    a.add_argument("--catalog", default=DEFAULT_CATALOG)
    a.add_argument("--agreements", default=DEFAULT_AGREEMENTS, help="where the tiers are defined")
    a.add_argument("--by", default="operator", help="recorded as who assigned it")
    views.add_db_argument(a)
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.set_defaults(func=assign)


def assign(args):
    try:
        tiers = load_agreements(args.agreements, load_catalog(args.catalog))
    except InputError as e:
        print(f"capshard agreement assign: {e}", file=sys.stderr)
        return 1
    if args.tier not in tiers:
        print(f"capshard agreement assign: unknown tier {args.tier!r} (known: {', '.join(sorted(tiers))})",
              file=sys.stderr)
        return 1
    if args.rate <= 0:
        print("capshard agreement assign: --rate must be > 0", file=sys.stderr)
        return 1
    store = views.open_store_for("agreement assign", args.db, must_exist=False)
    if store is None:
        return 1
    try:
        known = [d["device_id"] for d in store.list_devices()]
        if args.device:
            targets = list(dict.fromkeys(args.device))
        else:
            targets = [d for d in known if args.all or fnmatch.fnmatchcase(d, args.group)]
        if not targets:
            print("capshard agreement assign: no device matches", file=sys.stderr)
            return 1
        changed, unchanged = _assign_all(store, targets, args.tier, args.rate, args.by, progress=not args.json)
    finally:
        store.close()
    if args.json:
        views.print_json({"tier": args.tier, "changed": changed, "unchanged": unchanged})
    else:
        print(f"tier {args.tier}: {len(changed)} device(s) changed, {len(unchanged)} already on it")
    return 0


def _assign_all(store, targets, tier, rate, by, progress):
    changed, unchanged = [], []
    bar = None
    if progress:
        from rich.progress import Progress
        bar = Progress(transient=True, console=views.console())
        bar.start()
        task = bar.add_task(f"assigning tier {tier}", total=len(targets))
    try:
        start = time.monotonic()
        for n, device_id in enumerate(targets):
            wait = start + n / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            now = time.time()
            if store.assign_agreement(device_id, tier, now, by):
                store.add_event(device_id, "agreement", f"agreement: tier {tier} (by {by})", now)
                store.request_work(device_id, WORK_REPLAN, now)   # the service re-plans it
                changed.append(device_id)
            else:
                unchanged.append(device_id)
            if bar:
                bar.advance(task)
    finally:
        if bar:
            bar.stop()
    return changed, unchanged
