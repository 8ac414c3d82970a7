"""`capshard plan`: a dry run of the allocator from files.

    capshard plan --agreement standard --device dev.json --needs report.json [--json]

--catalog and --agreements default to the shipped example files. The device
file is JSON: {"board": ..., "capacities": {"cpu", "mem_kb", "bw_kbps"},
"current": {shard id: op-dict}}; the needs file is a QoS report as JSON.
"""

import json
import sys
import time

from ..allocator import DeviceState, Needs, allocate
from ..catalog import DEFAULT_AGREEMENTS, DEFAULT_CATALOG, InputError, load_agreements, load_catalog


def register(subparsers):
    p = subparsers.add_parser("plan", help="dry-run the shard allocator from files",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--catalog", default=DEFAULT_CATALOG, help="catalog TOML (default: shipped example)")
    p.add_argument("--agreements", default=DEFAULT_AGREEMENTS,
                   help="agreements TOML (default: shipped example)")
    p.add_argument("--agreement", required=True, metavar="TIER", help="tier name")
    p.add_argument("--device", required=True, help="device state JSON")
    p.add_argument("--needs", required=True, help="QoS report JSON")
    p.add_argument("--now", type=float, default=None, help="wall time to plan at (default: now)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=run)


def _read_json(path, what):
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except OSError as e:
        raise InputError(path, None, None, f"cannot read {what}: {e.strerror}") from None
    except ValueError as e:
        raise InputError(path, None, None, f"{what} is not valid JSON: {e}") from None


def run(args):
    try:
        catalog = load_catalog(args.catalog)
        tiers = load_agreements(args.agreements, catalog)
        if args.agreement not in tiers:
            raise InputError(args.agreements, None, None,
                             f"no tier '{args.agreement}' (tiers: {', '.join(sorted(tiers))})")
        device = DeviceState.from_dict(_read_json(args.device, "device state"), args.device)
        needs = Needs.from_report(_read_json(args.needs, "needs"), args.needs)
        now = time.time() if args.now is None else args.now
        plan = allocate(catalog, tiers[args.agreement], device, needs, now)
    except InputError as e:
        print(f"capshard plan: error: {e}", file=sys.stderr)
        return 2
    print(plan.to_json(indent=2) if args.json else plan.render())
    return 0
