"""Board configurations on the host: load board_configs/<kind>.json and check it
against board_configs/schema.json before anything is built or flashed.

The validator below interprets the subset of JSON Schema the schema uses
(type, enum, const, required, properties, additionalProperties, minimum,
maximum, minLength, pattern, items, if/then), so the schema file stays a
standard one that editors and `jsonschema` also understand. Every error names
the file and the field; the device repeats the same checks at boot
(firmware/capdev/config.py).
"""

import json
import os
import re

from .paths import BOARD_CONFIGS_DIR

SCHEMA_PATH = os.path.join(BOARD_CONFIGS_DIR, "schema.json")


class BoardConfigError(ValueError):
    """A board configuration that cannot be used; the text names file and field."""


def kinds():
    """Board kinds that have a config file."""
    return sorted(n[:-5] for n in os.listdir(BOARD_CONFIGS_DIR)
                  if n.endswith(".json") and n != "schema.json")


def path_for(board):
    """A board kind (``esp32``) or a path to a JSON file."""
    if board.endswith(".json") or os.sep in board:
        return board
    return os.path.join(BOARD_CONFIGS_DIR, f"{board}.json")


def load(board):
    """Load and validate a board config; returns the dict or raises BoardConfigError."""
    path = path_for(board)
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        known = ", ".join(kinds())
        raise BoardConfigError(f"{path}: cannot read board config ({e.strerror}); known boards: {known}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise BoardConfigError(f"{path}: not valid JSON ({e})") from None
    return check(data, path)


def check(data, path="<board config>"):
    errors = validate(data, _schema())
    if errors:
        field, why = errors[0]
        raise BoardConfigError(f"{path}: {_say(field, why)}")
    # Rules a schema cannot say.
    if data["free_heap_floor_kb"] >= data["heap_kb"]:
        raise BoardConfigError(f"{path}: field 'free_heap_floor_kb' must be below heap_kb")
    stem = os.path.basename(path)[:-5] if path.endswith(".json") else None
    if stem and os.path.dirname(os.path.abspath(path)) == BOARD_CONFIGS_DIR and data["board"] != stem:
        raise BoardConfigError(f"{path}: field 'board' is {data['board']!r} but the file is {stem}.json")
    return data


def _say(field, why):
    if why == "missing":
        return f"missing field '{field}'"
    return f"field '{field}' {why}" if field else why


_cache = {}


def _schema():
    if "schema" not in _cache:
        with open(SCHEMA_PATH) as f:
            _cache["schema"] = json.load(f)
    return _cache["schema"]


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


def validate(value, schema, field=""):
    """List of (field, reason) for ``value`` against ``schema``; empty when valid."""
    errors = []
    kind = schema.get("type")
    if kind and not _TYPES[kind](value):
        return [(field, f"must be of type {kind}")]
    if "const" in schema and value != schema["const"]:
        return [(field, f"must be {schema['const']!r}")]
    if "enum" in schema and value not in schema["enum"]:
        return [(field, f"has unknown value {value!r} (one of {', '.join(map(str, schema['enum']))})")]
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append((field, "must not be empty"))
        elif "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append((field, f"value {value!r} does not match {schema['pattern']}"))
    if _TYPES["integer"](value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append((field, f"must be at least {schema['minimum']}"))
        if "maximum" in schema and value > schema["maximum"]:
            errors.append((field, f"must be at most {schema['maximum']}"))
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], f"{field}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append((_join(field, name), "missing"))
        if schema.get("additionalProperties") is False:
            for name in sorted(value):
                if name not in props:
                    errors.append((_join(field, name), "is not a known field"))
        for name, sub in props.items():
            if name in value:
                errors += validate(value[name], sub, _join(field, name))
    if "if" in schema and not validate(value, schema["if"], field):
        errors += validate(value, schema.get("then", {}), field)
    return errors


def _join(field, name):
    return f"{field}.{name}" if field else name
