# Board configuration and device identity, read at boot. A wrong or missing
# field stops the boot with an error naming the file and the field.
# host/capshard/boards.py checks the same files on the host, before flashing,
# against board_configs/schema.json; tests keep the two in step.
import json

from capdev import platform

RUNTIMES = ("micropython", "cpython")
IDENTITY_SOURCES = ("file",)
TRAFFIC_SOURCES = ("synthetic", "pcap", "wifi-sta", "lan-bridge", "conntrack")

# A field is (kind, required, rule):
#   kind: str, int, bool, list (of str), "address" ([host, port]), or a nested dict of fields;
#   rule: for int, (min, max); for str, a tuple of allowed values; else None.
# Unknown fields are errors too: a misspelt optional field must not pass silently.
_CAPS = {
    "cpu": (int, True, (1, 100)),
    "mem_kb": (int, True, (1, 1 << 20)),
    "bw_kbps": (int, True, (1, 1 << 24)),
}
_BROKER = {
    "host": (str, True, None),
    "port": (int, True, (1, 65535)),
    "tls": (bool, False, None),
    "ca_file": (str, False, None),
    "keepalive_s": (int, False, (5, 3600)),
}
_IDENTITY_FROM = {
    "source": (str, True, IDENTITY_SOURCES),
    "file": (str, True, None),
}

_RNMA = {
    "max_flows": (int, False, (4, 4096)),
    "report_min_interval_ms": (int, False, (100, 3600000)),
    "report_max_interval_ms": (int, False, (1000, 86400000)),
    "hold_ms": (int, False, (0, 3600000)),
}

_RNMA = {
    "report_min_interval_ms": (int, False, (100, 86400000)),
    "report_max_interval_ms": (int, False, (1000, 86400000)),
    "hold_ms": (int, False, (0, 86400000)),
    "max_flows": (int, False, (1, 100000)),
}

_VPN = {
    "peer": ("address", True, None),
    "bind": ("address", False, None),
    "users": (str, False, None),
    "mtu": (int, False, (576, 9000)),
    "keepalive_ms": (int, False, (100, 3600000)),
}

BOARD_SCHEMA = {
    "board": (str, True, None),
    "description": (str, False, None),
    "runtime": (str, True, RUNTIMES),
    "heap_kb": (int, True, (16, 1 << 20)),
    "free_heap_floor_kb": (int, True, (0, 1 << 20)),
    "flash_kb": (int, False, (16, 1 << 24)),
    "capacities": (_CAPS, True, None),
    "broker": (_BROKER, True, None),
    "identity": (_IDENTITY_FROM, False, None),
    "state_dir": (str, False, None),
    "modules": (list, False, None),
    "shards": (list, True, None),
    "traffic_sources": (list, True, TRAFFIC_SOURCES),
    "rnma": (_RNMA, False, None),
    "vpn": (_VPN, False, None),
}

IDENTITY_SCHEMA = {
    "device_id": (str, True, None),
    "kid": (str, True, None),
    "key": (str, True, None),
    "broker_user": (str, False, None),
    "broker_password": (str, False, None),
    "broker": ({"host": (str, True, None), "port": (int, True, (1, 65535))}, False, None),
}


class ConfigError(ValueError):
    pass


def _fail(path, field, why):
    raise ConfigError(path + ": field '" + field + "' " + why)


def _check(data, schema, path, where):
    if not isinstance(data, dict):
        if where:
            _fail(path, where, "must be an object")
        raise ConfigError(path + ": top level must be a JSON object")
    for name in data:
        if name not in schema:
            _fail(path, (where + "." + name) if where else name, "is not a known field")
    for name in schema:
        kind, required, rule = schema[name]
        field = (where + "." + name) if where else name
        if name not in data:
            if required:
                raise ConfigError(path + ": missing field '" + field + "'")
            continue
        value = data[name]
        if isinstance(kind, dict):
            _check(value, kind, path, field)
        elif kind is int:
            if not isinstance(value, int) or isinstance(value, bool):
                _fail(path, field, "must be an integer")
            if rule and not rule[0] <= value <= rule[1]:
                _fail(path, field, "must be between " + str(rule[0]) + " and " + str(rule[1]))
        elif kind is list:
            if not isinstance(value, list):
                _fail(path, field, "must be a list of strings")
            for item in value:
                if not isinstance(item, str) or not item:
                    _fail(path, field, "must be a list of non-empty strings")
                if rule and item not in rule:
                    _fail(path, field, "has unknown value '" + item + "' (one of " + ", ".join(rule) + ")")
        elif kind == "address":
            if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0]
                    and isinstance(value[1], int) and not isinstance(value[1], bool)
                    and 0 <= value[1] <= 65535):
                _fail(path, field, "must be [host, port]")
        elif kind is bool:
            if not isinstance(value, bool):
                _fail(path, field, "must be true or false")
        else:
            if not isinstance(value, str) or not value:
                _fail(path, field, "must be a non-empty string")
            if rule and value not in rule:
                _fail(path, field, "must be one of " + ", ".join(rule))
    return data


def load_json(path, schema):
    return _check(_load_raw(path), schema, path, "")


def check_board(data, path):
    """Validate a board config already parsed; ConfigError names path and field."""
    _check(data, BOARD_SCHEMA, path, "")
    broker = data["broker"]
    if broker.get("tls") and not broker.get("ca_file"):
        _fail(path, "broker.ca_file", "is required when broker.tls is true")
    for name in data["shards"]:
        if not name.startswith("capdev.shards."):
            _fail(path, "shards", "entry '" + name + "' is not a module under capdev.shards.")
    if data["free_heap_floor_kb"] >= data["heap_kb"]:
        _fail(path, "free_heap_floor_kb", "must be below heap_kb")
    return data


def load_board(path):
    return check_board(_load_raw(path), path)


def _load_raw(path):
    raw = platform.read_file(path)
    if raw is None:
        raise ConfigError(path + ": file not found")
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ConfigError(path + ": not valid JSON (" + str(e) + ")")


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


def identity_path(board, root):
    """Where this board's identity file is (relative paths are under ``root``)."""
    src = board.get("identity") or {"source": "file", "file": "device.json"}
    return _under(root, src["file"])


def ca_path(board, root):
    """The broker CA file when the board talks TLS, else None."""
    broker = board["broker"]
    if not broker.get("tls"):
        return None
    return _under(root, broker["ca_file"])


def _under(root, name):
    if name.startswith("/") or not root:
        return name
    return root.rstrip("/") + "/" + name


def ssl_context(board, root=""):
    """An ssl.SSLContext that verifies the broker against the board's CA, or
    None when the board's broker link is plain MQTT. ConfigError when the CA
    file is missing or unreadable: a TLS board never falls back to plain."""
    path = ca_path(board, root)
    if path is None:
        return None
    cadata = platform.read_file(path)
    if cadata is None:
        raise ConfigError(path + ": CA file not found (field 'broker.ca_file')")
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cadata=_der(cadata))
    except (ValueError, OSError) as e:
        raise ConfigError(path + ": CA file unusable (" + str(e) + ")")
    return ctx


def _der(data):
    # Both runtimes take DER; PEM text is decoded here so either file works.
    if data[:5] != b"-----":
        return data
    import binascii

    lines = [ln for ln in data.split(b"\n") if ln and not ln.startswith(b"-----")]
    return binascii.a2b_base64(b"".join(lines))
