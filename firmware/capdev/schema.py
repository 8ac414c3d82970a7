# Field checks of a decoded instruction (wire protocol v1, docs/protocol.md).
# Separate from protocol.py so a device holds this code only while an
# instruction is being checked.
from capdev.protocol import MAX_ID_LEN, MAX_OPS, OPS, PRIORITIES, VERSION


class SchemaError(ValueError):
    pass


def _need(obj, key, kind, where):
    if key not in obj:
        raise SchemaError(where + ": missing field '" + key + "'")
    value = obj[key]
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise SchemaError(where + ": field '" + key + "' has the wrong type")
    return value


def _is_safe_name(text, allow_dots):
    # Shard ids and module names end up in imports and file names: letters,
    # digits, '_' and '-' (and '.' for module paths) only.
    if not text or len(text) > MAX_ID_LEN:
        return False
    for ch in text:
        if not (("a" <= ch <= "z") or ("A" <= ch <= "Z") or ("0" <= ch <= "9")
                or ch in "_-" or (allow_dots and ch == ".")):
            return False
    return True


def check_operation(op, where):
    if not isinstance(op, dict):
        raise SchemaError(where + ": operation must be a map")
    kind = _need(op, "op", str, where)
    if kind not in OPS:
        raise SchemaError(where + ": unknown op '" + kind + "'")
    shard = _need(op, "shard", str, where)
    if not _is_safe_name(shard, False):
        raise SchemaError(where + ": invalid shard id")
    if kind == "deactivate":
        return op
    module = _need(op, "module", str, where)
    if not _is_safe_name(module, True) or ".." in module:
        raise SchemaError(where + ": invalid module name")
    for key in ("cpu", "mem_kb", "bw_kbps", "dur_s"):
        value = _need(op, key, int, where)
        if value < 0:
            raise SchemaError(where + ": field '" + key + "' is negative")
    if op["cpu"] > 100:
        raise SchemaError(where + ": field 'cpu' is above 100")
    prio = _need(op, "prio", str, where)
    if prio not in PRIORITIES:
        raise SchemaError(where + ": unknown priority '" + prio + "'")
    alt = op.get("alt")
    if alt is not None and not (isinstance(alt, str) and _is_safe_name(alt, False)):
        raise SchemaError(where + ": invalid alt shard id")
    alt_module = op.get("alt_module")
    if alt_module is not None and not (isinstance(alt_module, str) and _is_safe_name(alt_module, True)
                                       and ".." not in alt_module):
        raise SchemaError(where + ": invalid alt_module name")
    return op


def check_instruction(msg):
    """Validate a decoded instruction payload; return it or raise SchemaError."""
    if not isinstance(msg, dict):
        raise SchemaError("instruction: payload must be a map")
    where = "instruction"
    if _need(msg, "v", int, where) != VERSION:
        raise SchemaError("instruction: unsupported version")
    _need(msg, "dev", str, where)
    iid = _need(msg, "id", str, where)
    if not iid or len(iid) > MAX_ID_LEN:
        raise SchemaError("instruction: bad id")
    if _need(msg, "seq", int, where) < 1:
        raise SchemaError("instruction: seq must be positive")
    _need(msg, "iat", int, where)
    if _need(msg, "ttl_s", int, where) < 1:
        raise SchemaError("instruction: ttl_s must be positive")
    _need(msg, "full", bool, where)
    if not isinstance(msg.get("rebirth", False), bool):
        raise SchemaError("instruction: field 'rebirth' has the wrong type")
    ops = _need(msg, "ops", list, where)
    if len(ops) > MAX_OPS:
        raise SchemaError("instruction: too many operations")
    seen = {}
    for i, op in enumerate(ops):
        check_operation(op, "instruction.ops[" + str(i) + "]")
        if op["shard"] in seen:
            raise SchemaError("instruction: shard '" + op["shard"] + "' appears twice")
        seen[op["shard"]] = True
    return msg
