"""`capshard devices`: the fleet at a glance."""

from ..service import views
from ..service.store import StoreError, open_store


def register(sub):
    p = sub.add_parser("devices", help="list the fleet's devices (desired vs reported, online, tier)")
    views.add_db_argument(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args):
    try:
        store = open_store(args.db)
    except StoreError as e:
        print(f"capshard devices: {e}")
        return 1
    try:
        data = views.devices_view(store)
    finally:
        store.close()
    if args.json:
        views.print_json(data)
    else:
        views.console().print(views.render_devices(data))
    return 0
