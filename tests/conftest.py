"""Shared fixtures: a private mosquitto per test, and firmware runners for both runtimes.

Real parts only. When mosquitto or MicroPython is missing the fixtures fail
loudly with the command that installs them; nothing is skipped.
"""

import json

import pytest

from capshard import fwrun
from capshard.broker import Mosquitto


@pytest.fixture
def broker():
    """A fresh mosquitto on a free loopback port; killed and removed afterwards."""
    b = Mosquitto()
    b.start()
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture(params=fwrun.RUNTIMES)
def runtime(request):
    """Parametrise a test over both runtimes the firmware must run on."""
    if request.param == "micropython":
        fwrun.micropython_binary()  # raises RuntimeMissing with the fix
    return request.param


class FirmwareRunner:
    """Runs firmware snippets on one runtime and returns their JSON output."""

    def __init__(self, runtime):
        self.runtime = runtime

    def run(self, code, heap_kb=fwrun.DEFAULT_HEAP_KB, input=None, timeout=120):
        """Run ``code``; it must succeed. Returns stdout."""
        p = fwrun.run(self.runtime, code, heap_kb=heap_kb, input=input, timeout=timeout)
        if p.returncode != 0:
            raise AssertionError(
                f"firmware code failed on {self.runtime} (rc={p.returncode}):\n"
                f"--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"
            )
        return p.stdout

    def run_json(self, code, **kw):
        """Run ``code`` whose last stdout line is JSON; return it decoded."""
        out = self.run(code, **kw).strip().splitlines()
        assert out, f"no output from firmware code on {self.runtime}"
        return json.loads(out[-1])


@pytest.fixture
def fw(runtime):
    return FirmwareRunner(runtime)
