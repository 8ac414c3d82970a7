# Board configuration and device identity, read at boot. A wrong or missing
# field stops the boot with an error naming the file and the field.
import json

from capdev import platform

# field -> (type, required); nested maps are described by nested dicts.
BOARD_SCHEMA = {
    "board": (str, True),
    "runtime": (str, True),
    "heap_kb": (int, True),
    "free_heap_floor_kb": (int, True),
    "capacities": ({"cpu": (int, True), "mem_kb": (int, True), "bw_kbps": (int, True)}, True),
    "broker": ({"host": (str, True), "port": (int, True), "tls": (bool, False),
                "keepalive_s": (int, False)}, True),
    "shards": (list, True),
    "traffic_sources": (list, True),
}

IDENTITY_SCHEMA = {
    "device_id": (str, True),
    "kid": (str, True),
    "key": (str, True),
    "broker_user": (str, False),
    "broker_password": (str, False),
    "broker": ({"host": (str, True), "port": (int, True)}, False),
}


class ConfigError(ValueError):
    pass


def _check(data, schema, path, where):
    if not isinstance(data, dict):
        raise ConfigError(path + ": " + (where or "top level") + " must be an object")
    for name in schema:
        kind, required = schema[name]
        field = (where + "." + name) if where else name
        if name not in data:
            if required:
                raise ConfigError(path + ": missing field '" + field + "'")
            continue
        value = data[name]
        if isinstance(kind, dict):
            _check(value, kind, path, field)
        elif kind is int:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(path + ": field '" + field + "' must be a non-negative integer")
        elif not isinstance(value, kind):
            raise ConfigError(path + ": field '" + field + "' must be of type " + kind.__name__)
    return data


def load_json(path, schema):
    raw = platform.read_file(path)
    if raw is None:
        raise ConfigError(path + ": file not found")
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ConfigError(path + ": not valid JSON (" + str(e) + ")")
    return _check(data, schema, path, "")


def load_board(path):
    return load_json(path, BOARD_SCHEMA)


def load_identity(path):
    ident = load_json(path, IDENTITY_SCHEMA)
    try:
        key = platform.unhexlify(ident["key"])
    except ValueError:
        raise ConfigError(path + ": field 'key' must be hex")
    if len(key) < 16:
        raise ConfigError(path + ": field 'key' must be at least 16 bytes")
    ident["key_bytes"] = key
    return ident
