"""Test runner for a CPython device agent whose wall clock is skewed by
CAPSHARD_TEST_CLOCK_SKEW_S seconds (the hook lives here, never in firmware)."""

import os
import sys
import time

_real_time = time.time
_skew = float(os.environ.get("CAPSHARD_TEST_CLOCK_SKEW_S", "0"))
time.time = lambda: _real_time() + _skew

from capdev import agent  # noqa: E402

sys.exit(agent.main(sys.argv[1:]))
