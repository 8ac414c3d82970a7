"""Every decoder that meets outside input, wrapped as ``target(data: bytes)``.

Each target feeds ``data`` to one decoder and lets it either return or raise;
``ALLOWED[name]`` is the one error type that decoder documents. Shared by the
hypothesis suite (tests/reliability/test_fuzz_decoders.py), the corpus replay
and the long fuzzer (tools/fuzz/run.py), so all three judge alike.

Structured decoders (schema, board config, catalog, QoS report) take their
document as bytes too: CBOR for the wire-shaped ones, JSON for board configs,
TOML for catalogs. Input the outer format cannot parse is not the decoder's
business and counts as a quiet return (the outer parser is fuzzed on its own).
"""

import json
import os
import sys
import tomllib

import cbor2

from capshard.paths import FIRMWARE_DIR

if str(FIRMWARE_DIR) not in sys.path:
    sys.path.insert(0, str(FIRMWARE_DIR))

from capdev import cbor as dev_cbor  # noqa: E402
from capdev import config as dev_config  # noqa: E402
from capdev import cose as dev_cose  # noqa: E402
from capdev import schema as dev_schema  # noqa: E402
from capdev.mqtt import packets as dev_packets  # noqa: E402

from capshard import boards, wire  # noqa: E402
from capshard.allocator.needs import Needs  # noqa: E402
from capshard.catalog.errors import CatalogError, NeedsError  # noqa: E402
from capshard.catalog.loader import parse_catalog  # noqa: E402

KEY = bytes(range(32))
KID = b"fuzz-dev#1"
INSTRUCTION_CAP = 4096


def _outer_cbor(data):
    try:
        return True, cbor2.loads(data)
    except Exception:  # the outer parser's own failures are out of scope here
        return False, None


def t_cbor(data):
    # The device's limits for an instruction payload: depth 8, 4096 bytes.
    return dev_cbor.loads(data, max_depth=8, max_size=INSTRUCTION_CAP)


def t_cose(data):
    return dev_cose.mac0_verify(data, lambda kid: KEY if kid == KID else None, max_size=INSTRUCTION_CAP)


def t_mqtt(data):
    # Feed in two pieces (split point from the first byte) to exercise buffering.
    parser = dev_packets.Parser(max_packet_size=8192)
    cut = data[0] % (len(data) + 1) if data else 0
    out = []
    for piece in (data[:cut], data[cut:]):
        parser.feed(piece)
        while True:
            p = parser.next_packet()
            if p is None:
                break
            out.append(p)
    return out


def t_schema(data):
    ok, doc = _outer_cbor(data)
    return dev_schema.check_instruction(doc) if ok else None


def t_wire(data):
    return wire.decode(data)


def t_report(data):
    ok, doc = _outer_cbor(data)
    return Needs.from_report(doc) if ok else None


def _outer_json(data):
    try:
        return True, json.loads(data)
    except (ValueError, RecursionError):
        return False, None


def t_board_device(data):
    ok, doc = _outer_json(data)
    return dev_config.check_board(doc, "fuzz.json") if ok else None


def t_board_host(data):
    ok, doc = _outer_json(data)
    return boards.check(doc, "fuzz.json") if ok else None


def t_catalog(data):
    # The parsed document, carried as JSON (TOML has no writer in the stdlib).
    ok, doc = _outer_json(data)
    return parse_catalog(doc, "fuzz.toml") if ok else None


def t_catalog_toml(data):
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return None
    return parse_catalog(doc, "fuzz.toml")


TARGETS = {
    "cbor": t_cbor,
    "cose": t_cose,
    "mqtt": t_mqtt,
    "schema": t_schema,
    "wire": t_wire,
    "report": t_report,
    "board_device": t_board_device,
    "board_host": t_board_host,
    "catalog": t_catalog,
    "catalog_toml": t_catalog_toml,
}

ALLOWED = {
    "cbor": dev_cbor.CBORError,
    "cose": dev_cose.CoseError,
    "mqtt": dev_packets.MqttProtocolError,
    "schema": dev_schema.SchemaError,
    "wire": wire.WireError,
    "report": NeedsError,
    "board_device": dev_config.ConfigError,
    "board_host": boards.BoardConfigError,
    "catalog": CatalogError,
    "catalog_toml": CatalogError,
}


def run(name, data):
    """Run one input; return "ok" or "rejected", raise anything undocumented."""
    try:
        TARGETS[name](data)
        return "ok"
    except ALLOWED[name]:
        return "rejected"


CORPUS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def save_crasher(name, data):
    """Keep an input that broke a decoder as a regression case."""
    import hashlib

    d = os.path.join(CORPUS_DIR, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, hashlib.sha256(data).hexdigest()[:16] + ".bin")
    with open(path, "wb") as f:
        f.write(data)
    return path
