"""`capshard broker`: deploy and run the fleet's mosquitto (TLS, passwords, ACLs).

    capshard broker init DIR [--host H] [--port P]   CA, server cert, config, provider credentials
    capshard broker start|stop|status DIR
    capshard broker add-device DIR ID                 credentials + ACL; reloads (SIGHUP)
    capshard broker revoke-device DIR ID              removes them; reloads (SIGHUP)
"""

import json
import sys

from ..deploy_broker import DEFAULT_PORT, BrokerDeployError, Deployment


def register(sub):
    p = sub.add_parser("broker", help="deploy and run the fleet's mosquitto (TLS, passwords, ACLs)")
    bsub = p.add_subparsers(dest="broker_command", metavar="ACTION", required=True)
    init = bsub.add_parser("init", help="create a deployment directory")
    init.add_argument("dir")
    init.add_argument("--host", default="127.0.0.1", help="address devices use (in the certificate)")
    init.add_argument("--port", type=int, default=DEFAULT_PORT)
    init.add_argument("--bind", default="127.0.0.1", help="address mosquitto listens on")
    init.add_argument("--name", action="append", default=[], help="extra certificate name (repeatable)")
    init.set_defaults(func=_init)
    for name, func, text in (("start", _start, "start mosquitto"), ("stop", _stop, "stop mosquitto"),
                             ("status", _status, "show state, devices and revocations")):
        sp = bsub.add_parser(name, help=text)
        sp.add_argument("dir")
        if name == "status":
            sp.add_argument("--json", action="store_true")
        sp.set_defaults(func=func)
    for name, func, text in (("add-device", _add, "give a device credentials and its ACL"),
                             ("revoke-device", _revoke, "withdraw a device's credentials")):
        sp = bsub.add_parser(name, help=text)
        sp.add_argument("dir")
        sp.add_argument("device_id")
        sp.set_defaults(func=func)


def _guard(fn):
    def run(args):
        try:
            return fn(args) or 0
        except BrokerDeployError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return run


@_guard
def _init(args):
    dep = Deployment.init(args.dir, host=args.host, port=args.port, bind=args.bind, names=args.name)
    print(f"broker deployment in {dep.directory}: TLS on {dep.host}:{dep.port}, CA ca.crt, "
          f"provider user {dep.provider_user} (password in credentials.json, mode 600)")


@_guard
def _start(args):
    dep = Deployment.load(args.dir)
    pid = dep.start()
    print(f"mosquitto running (pid {pid}), TLS on {dep.host}:{dep.port}")


@_guard
def _stop(args):
    dep = Deployment.load(args.dir)
    print("mosquitto stopped" if dep.stop() else "mosquitto was not running")


@_guard
def _status(args):
    st = Deployment.load(args.dir).status()
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"broker {st['address']} (TLS): {'running, pid ' + str(st['pid']) if st['running'] else 'stopped'}"
          f"{'' if st['listening'] or not st['running'] else ' but NOT listening'}")
    print(f"devices ({len(st['devices'])}): {', '.join(st['devices']) or '-'}")
    print(f"revoked ({len(st['revoked'])}): {', '.join(st['revoked']) or '-'}")
    return 0 if st["running"] else 3


@_guard
def _add(args):
    dep = Deployment.load(args.dir)
    new = dep.add_device(args.device_id)
    print(f"device {args.device_id} {'added' if new else 'already present'}; "
          f"{'broker reloaded' if dep.pid() else 'applies when the broker starts'}")


@_guard
def _revoke(args):
    dep = Deployment.load(args.dir)
    dep.revoke_device(args.device_id)
    print(f"device {args.device_id} revoked; {'broker reloaded' if dep.pid() else 'applies when the broker starts'}")
