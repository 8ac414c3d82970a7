# capdev: the capshard device firmware (runs on MicroPython and CPython).
VERSION = "0.1.0"


def unload(name):
    """Forget module ``name`` (sys.modules and its parent's attribute) so its
    code and constants can be collected once nothing else refers to them.
    The interned names (qstrs) stay; importing it again reuses them."""
    import sys

    sys.modules.pop(name, None)
    dot = name.rfind(".")
    parent = sys.modules.get(name[:dot]) if dot > 0 else None
    if parent is not None and hasattr(parent, name[dot + 1:]):
        try:
            delattr(parent, name[dot + 1:])
        except (AttributeError, TypeError):
            pass
