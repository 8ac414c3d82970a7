#!/usr/bin/env python3
"""Start a simulated board (same as `capshard board sim DIR`); prints its port.

    tools/simboard.py BOARD_DIR [--heap-kb 128] [--link PATH]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "host"))

from capshard.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["board", "sim", *sys.argv[1:]]))
