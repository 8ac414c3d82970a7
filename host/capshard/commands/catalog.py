"""`capshard catalog validate`: check a catalog and its agreements (every
tier's baseline must run on its boards) before the service loads them."""

import sys

from ..catalog import DEFAULT_AGREEMENTS, DEFAULT_CATALOG, InputError, load_agreements, load_catalog
from ..service import views


def register(sub):
    p = sub.add_parser("catalog", help="the capability catalog")
    csub = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    v = csub.add_parser("validate", help="validate a catalog and its agreements")
    v.add_argument("--catalog", default=DEFAULT_CATALOG)
    v.add_argument("--agreements", default=DEFAULT_AGREEMENTS)
    v.add_argument("--json", action="store_true", help="machine-readable output")
    v.set_defaults(func=validate)


def validate(args):
    result = {"catalog": args.catalog, "agreements": args.agreements, "valid": False, "error": None}
    try:
        catalog = load_catalog(args.catalog)
        result.update(boards=sorted(catalog.boards), capabilities=sorted(catalog.capabilities),
                      slots=len(catalog.slots), shards=len(catalog.shards))
        tiers = load_agreements(args.agreements, catalog)
        result.update(tiers=sorted(tiers), valid=True)
    except InputError as e:
        result["error"] = str(e)
    if args.json:
        views.print_json(result)
    elif result["valid"]:
        print(f"valid: {result['shards']} shards in {result['slots']} slots of "
              f"{len(result['capabilities'])} capabilities, boards {', '.join(result['boards'])}; "
              f"tiers {', '.join(result['tiers'])}")
    else:
        print(f"invalid: {result['error']}", file=sys.stderr)
    return 0 if result["valid"] else 1
