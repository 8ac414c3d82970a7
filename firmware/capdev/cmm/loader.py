# Import and unload shard code by module name. Only modules under
# capdev.shards. may be loaded: a name is a dotted path of identifiers, never a
# file path, so an instruction cannot reach code outside the shard package.
import gc
import sys

import capdev
from capdev import platform

PACKAGE = "capdev.shards."
MAX_NAME = 64


class LoadError(Exception):
    """A shard module that cannot be loaded; ``reason`` says why."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _is_identifier(part):
    if not part or not (part[0] == "_" or part[0].isalpha()):
        return False
    for ch in part:
        if not (ch == "_" or ch.isalpha() or ch.isdigit()):
            return False
    return True


def check_name(name):
    """Raise LoadError unless ``name`` is a plain module path under capdev.shards."""
    if not isinstance(name, str) or not name:
        raise LoadError("module name must be a non-empty string")
    if len(name) > MAX_NAME:
        raise LoadError("module name longer than " + str(MAX_NAME) + " characters")
    for ch in "/\\:":
        if ch in name:
            raise LoadError("module name '" + name + "' contains a path character")
    if not name.startswith(PACKAGE):
        raise LoadError("module '" + name + "' is not under " + PACKAGE[:-1])
    parts = name.split(".")
    for part in parts:
        if not _is_identifier(part):
            raise LoadError("module name '" + name + "' is not a dotted identifier path")
    if parts[-1] == "sdk" and len(parts) == 3:
        raise LoadError("module '" + name + "' is the SDK, not a shard")
    return name


def load(name):
    """Import ``name``; return (module, heap bytes it added or None).

    The module must define a class ``Shard``. Import errors of any kind become
    a LoadError so a bad module never takes the caller down.
    """
    check_name(name)
    already = name in sys.modules
    before = platform.heap_used()
    try:
        __import__(name)
        module = sys.modules[name]
    except ImportError as e:
        _forget(name)
        text = str(e)
        if ("'" + name + "'") in text:
            raise LoadError("module '" + name + "' not found")
        raise LoadError("module '" + name + "' cannot be imported: " + text)
    except MemoryError:
        _forget(name)
        raise LoadError("out of memory importing '" + name + "'")
    except Exception as e:
        _forget(name)
        raise LoadError("importing '" + name + "' raised " + type(e).__name__ + ": " + str(e))
    if not hasattr(module, "Shard"):
        module = None
        unload(name)
        raise LoadError("module '" + name + "' defines no Shard class")
    if before is None:
        return module, None
    if already:
        return module, 0  # shared with another shard: its code costs nothing new
    return module, platform.heap_used() - before


def load_within(name, limit_b):
    """load(), but a module measured over ``limit_b`` is imported once more
    and measured again before anyone refuses it. The first import of new code
    may also grow the runtime's table of interned names (on MicroPython, by
    ~14 KiB at once at ~1,260 names), a one-off that every later import then
    shares; the second measure is the code alone. Modules the first import
    brought in go too, so their code is counted again."""
    present = set(sys.modules)
    module, load_b = load(name)
    if load_b is None or load_b <= limit_b:
        return module, load_b
    module = None
    for added in [k for k in sys.modules if k not in present]:
        capdev.unload(added)
    gc.collect()
    return load(name)


def _forget(name):
    # A failed import may leave the entry (CPython keeps parents; a module
    # that raised mid-import is removed by both runtimes, but be sure).
    try:
        del sys.modules[name]
    except KeyError:
        pass


def unload(name):
    """Drop the module from sys.modules and from its parent package, then
    collect. Returns the heap in use afterwards (None where unknown).

    The caller must already have dropped its own references (instances,
    classes, the module object); anything still referenced stays alive.
    """
    check_name(name)
    capdev.unload(name)
    gc.collect()
    return platform.heap_used()
