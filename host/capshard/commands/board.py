"""`capshard board`: board kinds and the simulated board.

    capshard board list            board kinds and their key figures
    capshard board check FILE|KIND validate a board config (host side)
    capshard board sim DIR         start a simulated board; prints its port
"""

import sys

from .. import boards


def register(sub):
    p = sub.add_parser("board", help="board configs and the simulated board")
    bsub = p.add_subparsers(dest="board_command", metavar="ACTION", required=True)
    ls = bsub.add_parser("list", help="list board kinds")
    ls.set_defaults(func=_list)
    ck = bsub.add_parser("check", help="validate a board config")
    ck.add_argument("board", help="board kind or path to a JSON file")
    ck.set_defaults(func=_check)
    sim = bsub.add_parser("sim", help="run a simulated board (MicroPython unix port behind a pty)")
    sim.add_argument("dir", help="the board's filesystem directory (created if missing)")
    sim.add_argument("--heap-kb", type=int, default=None,
                     help="MicroPython heap (default: heap_kb of the simulated board config)")
    sim.add_argument("--link", help="also make this path a symlink to the port")
    sim.set_defaults(func=_sim)


def _list(args):
    for kind in boards.kinds():
        try:
            b = boards.load(kind)
        except boards.BoardConfigError as e:
            print(f"{kind:<16} INVALID: {e}")
            continue
        print(f"{kind:<16} {b['runtime']:<12} heap {b['heap_kb']:>6} KiB  flash {b.get('flash_kb', '-'):>6} KiB  "
              f"tls {'yes' if b['broker'].get('tls') else 'no':<3}  {b.get('description', '')}")
    return 0


def _check(args):
    try:
        b = boards.load(args.board)
    except boards.BoardConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{boards.path_for(args.board)}: ok ({b['board']}, {b['runtime']})")
    return 0


def _sim(args):
    from .. import simboard

    heap = args.heap_kb or boards.load("simulated")["heap_kb"]
    return simboard.serve(args.dir, heap_kb=heap, link=args.link)
