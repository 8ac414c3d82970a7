"""`capshard device show ID`: one device in full (desired vs reported, needs,
instructions and their outcomes, health, recent events)."""

from ..service import views


def register(sub):
    p = sub.add_parser("device", help="one device in detail")
    dsub = p.add_subparsers(dest="device_command", metavar="ACTION", required=True)
    show = dsub.add_parser("show", help="desired vs reported, needs, instructions, health")
    show.add_argument("device_id")
    views.add_db_argument(show)
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.add_argument("--instructions", type=int, default=10, help="how many recent instructions (default 10)")
    show.set_defaults(func=show_device)


def show_device(args):
    store = views.open_store_for("device show", args.db)
    if store is None:
        return 1
    try:
        data = views.device_detail(store, args.device_id, instructions=args.instructions)
    finally:
        store.close()
    if data is None:
        print(f"capshard device show: no device {args.device_id!r} in the fleet store")
        return 1
    if args.json:
        views.print_json(data)
    else:
        views.console().print(views.render_device(data))
    return 0
