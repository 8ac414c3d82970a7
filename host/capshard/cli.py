"""The `capshard` command. Each subcommand lives in capshard/commands/<name>.py
and exposes ``register(subparsers)``; they are discovered here, so adding a
command never touches this file."""

import argparse
import importlib
import os
import pkgutil
import sys

from . import __version__, commands


def build_parser():
    parser = argparse.ArgumentParser(
        prog="capshard",
        description="capshard: traffic-driven capability shards for network devices",
    )
    parser.add_argument("--version", action="version", version=f"capshard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except BrokenPipeError:
        # The reader went away (`capshard events | head`): stop quietly, and
        # keep the interpreter's final flush from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
