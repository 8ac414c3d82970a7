"""Board configurations on the host: load board_configs/<kind>.json and check it
against board_configs/schema.json before anything is built or flashed.

The schema is standard JSON Schema (draft 2020-12), checked with the
`jsonschema` package. Every error names the file and the field; the device
repeats the same checks at boot (firmware/capdev/config.py).
"""

import json
import os

from jsonschema import Draft202012Validator

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


def validate(value, schema):
    """(field, reason) for each problem of ``value`` against ``schema``; empty when valid."""
    errors = []
    for err in Draft202012Validator(schema).iter_errors(value):
        field = _field(err.absolute_path)
        if err.validator == "required":
            missing = [n for n in err.validator_value if n not in err.instance]
            errors += [(_join(field, n), "missing") for n in missing]
        elif err.validator == "additionalProperties":
            known = err.schema.get("properties", {})
            errors += [(_join(field, n), "is not a known field") for n in sorted(err.instance) if n not in known]
        else:
            errors.append((field, err.message))
    return sorted(errors)


def _field(path):
    out = ""
    for part in path:
        out = f"{out}[{part}]" if isinstance(part, int) else _join(out, part)
    return out


def _join(field, name):
    return f"{field}.{name}" if field else name
