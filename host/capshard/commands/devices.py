"""`capshard devices`: the fleet at a glance."""

from ..service import views


def register(sub):
    p = sub.add_parser("devices", help="list the fleet's devices (desired vs reported, online, tier)")
    views.add_db_argument(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args):
    store = views.open_store_for("devices", args.db)
    if store is None:
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
