"""`capshard flash PORT --board B --device-id ID`: build, provision, deploy
with mpremote (only what changed), verify, reset. See host/capshard/flash.py."""

import sys
import time

from .. import boards, flash


def register(sub):
    p = sub.add_parser("flash", help="build, provision and deploy capshard to a MicroPython board")
    p.add_argument("port", help="serial port of the board, e.g. /dev/ttyUSB0 or a simulated board's /dev/pts/N")
    p.add_argument("--board", required=True, help="board kind (board_configs/<kind>.json) or a config file")
    p.add_argument("--device-id", required=True, help="device id: letters, digits, '_' and '-'")
    p.add_argument("--keystore", required=True,
                   help="provider keystore (JSON); the device's key is created there if missing")
    p.add_argument("--broker-dir", help="broker deployed with `capshard broker init`: address, CA, credentials")
    p.add_argument("--broker-host", help="override the broker host the device connects to")
    p.add_argument("--broker-port", type=int, help="override the broker port")
    p.add_argument("--ca", help="broker CA certificate (PEM or DER) when not using --broker-dir")
    p.add_argument("--dry-run", action="store_true", help="build and compare with the board; change nothing")
    p.add_argument("--no-reset", action="store_true", help="leave the board at the REPL after flashing")
    p.add_argument("--quiet", action="store_true", help="only errors and the final line")
    p.set_defaults(func=run)


def run(args):
    start = time.monotonic()

    def say(text):
        if not args.quiet:
            print(f"[flash {time.monotonic() - start:5.1f}s] {text}", flush=True)

    from ..deploy_broker import BrokerDeployError, Deployment

    if not _valid_id(args.device_id):
        print(f"error: device id {args.device_id!r}: use letters, digits, '_' and '-'", file=sys.stderr)
        return 2
    try:
        deployment = Deployment.load(args.broker_dir) if args.broker_dir else None
        board, identity, ca = flash.prepare_board(
            args.board, args.device_id, args.keystore, deployment,
            args.broker_host, args.broker_port, args.ca, dry_run=args.dry_run)
        image = flash.build_image(board, identity, ca, say=say)
        summary = flash.flash(args.port, image, dry_run=args.dry_run, reset=not args.no_reset, say=say)
    except (boards.BoardConfigError, flash.FlashError, BrokerDeployError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    verb = "would copy" if args.dry_run else "copied"
    print(f"flash {'dry run ' if args.dry_run else ''}done: {verb} {len(summary['copied'])} files, "
          f"removed {len(summary['removed'])}, {summary['unchanged']} unchanged "
          f"({time.monotonic() - start:.1f} s)", flush=True)
    return 0


def _valid_id(device_id):
    return bool(device_id) and len(device_id) <= 64 and all(c.isalnum() or c in "_-" for c in device_id) \
        and device_id.isascii()
