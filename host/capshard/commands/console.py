"""`capshard console PORT`: the board's log with host timestamps, diagnostics,
a session log, and reconnection across board resets.

Interactive: lines typed are sent to the board; `:diag` shows diagnostics,
`:reset` reboots the board (Ctrl-C, Ctrl-D), `:quit` leaves."""

import json
import select
import sys
import time

from .. import console


def register(sub):
    p = sub.add_parser("console", help="serial console: timestamped log, diagnostics, session log")
    p.add_argument("port", help="serial port, e.g. /dev/ttyUSB0 or a simulated board's /dev/pts/N")
    p.add_argument("--log", help="session log file (default: capshard-console-<port>-<time>.log)")
    p.add_argument("--no-log", action="store_true", help="do not save a session log")
    p.add_argument("--diag", action="store_true", help="print diagnostics once and exit")
    p.add_argument("--json", action="store_true", help="with --diag: the raw JSON")
    p.add_argument("--duration", type=float, help="stream for this many seconds, then exit")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for diagnostics")
    p.set_defaults(func=run)


def run(args):
    log_path = None if args.no_log else (args.log or console.default_log_path(args.port))
    echo = None if (args.diag and args.json) else print
    con = console.Console(args.port, log_path=log_path, echo=(lambda t: print(t, flush=True)) if echo else None)
    try:
        con.open()
        if args.diag:
            d = con.diag(timeout=args.timeout)
            print(json.dumps(d, indent=2) if args.json else console.format_diag(d), flush=True)
            return 0
        if log_path:
            print(f"[console] {args.port}; session log {log_path}; :diag :reset :quit", flush=True)
        end = time.monotonic() + args.duration if args.duration else None
        interactive = sys.stdin.isatty() and not args.duration
        while end is None or time.monotonic() < end:
            con.poll()
            if interactive and select.select([sys.stdin], [], [], 0)[0]:
                if not _command(con, sys.stdin.readline()):
                    break
        return 0
    except console.ConsoleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        con.close()


def _command(con, line):
    cmd = line.strip()
    if cmd in (":quit", ":q"):
        return False
    if cmd == ":diag":
        try:
            print(console.format_diag(con.diag(timeout=10)), flush=True)
        except console.ConsoleError as e:
            print(f"[console] {e}", flush=True)
    elif cmd == ":reset":
        con.send(b"\r\x03")
        time.sleep(0.3)
        con.send(b"\x02\x04")  # friendly REPL, then soft reset: the board boots main.py
    else:
        con.send(cmd.encode() + b"\r")
    return True
