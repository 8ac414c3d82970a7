"""`capshard events`: what happened in the fleet (births, plans, instructions,
acks, timeouts, errors); --follow keeps tailing it live."""

import time

from ..service import views


def register(sub):
    p = sub.add_parser("events", help="the fleet's event log; --follow for a live tail")
    views.add_db_argument(p)
    p.add_argument("--device", help="only this device")
    p.add_argument("--kind", action="append", help="only these kinds (repeatable): birth, desired, "
                                                   "instruction, ack, timeout, drift, error, ...")
    p.add_argument("--since", type=float, default=None, help="only the last SECONDS")
    p.add_argument("--limit", type=int, default=50, help="how many of the newest to show first (default 50)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    p.add_argument("--for", dest="duration", type=float, default=None,
                   help="with --follow: stop after SECONDS")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)


def run(args):
    store = views.open_store_for("events", args.db)
    if store is None:
        return 1
    since = time.time() - args.since if args.since is not None else None
    try:
        evs = store.events(device_id=args.device, kinds=args.kind, since=since)[-args.limit:]
        last = evs[-1]["id"] if evs else store.last_event_id()
        _emit(evs, args.json)
        stop_at = time.monotonic() + args.duration if args.duration is not None else None
        while args.follow and (stop_at is None or time.monotonic() < stop_at):
            time.sleep(0.25)
            evs = store.events(after_id=last, device_id=args.device, kinds=args.kind)
            if evs:
                last = evs[-1]["id"]
                _emit(evs, args.json)
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
    return 0


def _emit(evs, as_json):
    import json
    for e in evs:
        if as_json:
            print(json.dumps({"id": e["id"], "t": e["t"], "device": e["device_id"], "kind": e["kind"],
                              "text": e["text"]}, sort_keys=True), flush=True)
        else:
            print(f"{views.when(e['t'])}  {e['device_id'] or '-':<16} {e['kind']:<11} {e['text']}", flush=True)
