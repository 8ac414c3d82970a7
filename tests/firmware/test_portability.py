"""Every firmware file compiles with mpy-cross, and imports only modules that
MicroPython has, except behind a fallback (try/except ImportError, or the
CPython branch of an `if IS_MICROPYTHON` test in the platform shim)."""

import ast
import os

from capshard import fwrun
from capshard.build import compile_firmware, firmware_sources
from capshard.paths import FIRMWARE_DIR


def test_every_firmware_file_compiles_with_mpy_cross(tmp_path):
    out = compile_firmware(str(tmp_path / "mpy"))
    sources = firmware_sources()
    assert len(out) == len(sources) > 40
    for rel in out:
        assert (tmp_path / "mpy" / rel).stat().st_size > 0


def _guarded(node, parents):
    """True when an import sits where a missing module cannot break MicroPython."""
    child = node
    for parent in reversed(parents):
        if isinstance(parent, ast.Try) and child in parent.body:
            for handler in parent.handlers:
                names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                if any(isinstance(n, ast.Name) and n.id in ("ImportError", "Exception") for n in names):
                    return True
        if isinstance(parent, ast.If) and child in parent.orelse and "IS_MICROPYTHON" in ast.unparse(parent.test):
            return True
        child = parent
    return False


def _imports():
    """(file, line, top-level module, guarded) for every import in the firmware."""
    found = []
    for rel in firmware_sources():
        path = os.path.join(FIRMWARE_DIR, rel)
        with open(path) as f:
            tree = ast.parse(f.read(), rel)
        stack = []

        def visit(node):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for m in mods:
                    top = m.split(".")[0]
                    if top and top != "capdev" and not (isinstance(node, ast.ImportFrom) and node.level):
                        found.append((rel, node.lineno, top, _guarded(node, stack)))
            stack.append(node)
            for child in ast.iter_child_nodes(node):
                visit(child)
            stack.pop()

        visit(tree)
    return found


def test_firmware_imports_only_what_micropython_has_or_falls_back():
    imports = _imports()
    unguarded = sorted({top for _, _, top, guarded in imports if not guarded})
    code = ("import json\nok=[]\nfor m in " + repr(unguarded) + ":\n"
            "    try:\n        __import__(m)\n        ok.append(m)\n    except ImportError:\n        pass\n"
            "print(json.dumps(ok))\n")
    p = fwrun.run("micropython", code, heap_kb=512)
    assert p.returncode == 0, p.stderr
    present = set(__import__("json").loads(p.stdout.strip().splitlines()[-1]))
    missing = [(rel, line, top) for rel, line, top, guarded in imports
               if not guarded and top not in present and top != "romboot"]
    assert not missing, f"imports MicroPython lacks, without a fallback: {missing}"
