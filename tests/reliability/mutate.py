"""Seed inputs and deterministic mutators shared by the hypothesis suite and
the long fuzzer. A mutation is driven by a ``random.Random`` so a failing
case is reproduced from its seed alone."""

import json
import math
import os
import random

import cbor2

from capshard import wire
from capshard.paths import BOARD_CONFIGS_DIR, REPO_ROOT

from targets import KEY, KID

CATALOG_TOML = os.path.join(REPO_ROOT, "host", "capshard", "data", "catalog.toml")

OP = {"op": "activate", "shard": "aes-ctr", "ver": "1.0", "slot": "vpn.cipher",
      "module": "capdev.shards.vpn.aes128_ctr", "cpu": 20, "mem_kb": 16, "bw_kbps": 500,
      "prio": "high", "dur_s": 60, "alt": "null-cipher", "alt_module": "capdev.shards.null_cipher"}


def instruction():
    return wire.make_instruction("fuzz-dev", 7, [dict(OP), {"op": "deactivate", "shard": "old"}],
                                 True, 1_700_000_000, instruction_id="0123456789abcdef")


def report():
    return {"v": 1, "dev": "fuzz-dev", "seq": 3, "t": 1_700_000_000,
            "classes": {"telephony": {"bw_kbps": 90, "lat_ms": 150, "flows": 2, "conf": 80},
                        "standard": {"bw_kbps": 400, "lat_ms": None, "flows": 9, "conf": 60}},
            "security": {"level": "integrity", "dests": ["10.0.0.1"]}}


def board():
    with open(os.path.join(BOARD_CONFIGS_DIR, "simulated.json")) as f:
        return json.load(f)


def catalog_doc():
    import tomllib

    with open(CATALOG_TOML, "rb") as f:
        return tomllib.load(f)


def catalog_text():
    with open(CATALOG_TOML, "rb") as f:
        return f.read()


def signed_instruction():
    return wire.sign_instruction(instruction(), KEY, KID)


def mqtt_stream():
    import sys

    from capdev.mqtt import packets

    assert "capdev" in sys.modules
    return (bytes([0x20, 2, 0, 0]) + packets.encode_publish("capshard/v1/dev/x/inst", b"\xa0" * 40, qos=1, pid=9)
            + bytes([0x40, 2, 0, 9, 0x90, 3, 0, 1, 0, 0xD0, 0]))


# Values that break type and range assumptions.
_JSON_ODD = [None, True, False, 0, -1, 101, 2 ** 31, 2 ** 64, -2 ** 70, 1.5, -0.0, float("inf"), "",
             "x", "../../etc/passwd", "a/b", "a" * 300, "\u00e9\u0000", [], {}, [1, "a"], {"k": None}]
_CBOR_ODD = _JSON_ODD + [b"", b"\x00" * 8, float("nan"), cbor2.CBORTag(17, b"x"), cbor2.undefined]


def _clone(v):
    if isinstance(v, dict):
        return {k: _clone(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clone(x) for x in v]
    if isinstance(v, cbor2.CBORTag):
        return cbor2.CBORTag(v.tag, _clone(v.value))
    return v


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


def mutate_tree(doc, rng, n, odd=_JSON_ODD):
    """Apply ``n`` random structural edits: replace, delete, add, wrap, duplicate."""
    doc = _clone(doc)
    for _ in range(n):
        paths = list(_paths(doc))
        path = rng.choice(paths)
        if not path:
            if rng.random() < 0.1:
                doc = _clone(rng.choice(odd))
            continue
        parent = _get(doc, path[:-1])
        key = path[-1]
        r = rng.random()
        if r < 0.45:
            parent[key] = _clone(rng.choice(odd))
        elif r < 0.65:
            del parent[key]
        elif r < 0.8:
            if isinstance(parent, dict):
                parent[rng.choice(["zz", "v", "dev", "ops", key if isinstance(key, str) else "k"]) + ""] = \
                    _clone(rng.choice(odd))
            else:
                parent.append(_clone(rng.choice(odd + [parent[key]])))
        elif r < 0.9:
            parent[key] = [parent[key]] if rng.random() < 0.5 else {"w": parent[key]}
        else:
            v = parent[key]
            if isinstance(v, int) and not isinstance(v, bool):
                parent[key] = rng.choice([v + 1, v - 1, -v, v * 1000, 0])
            elif isinstance(v, str):
                parent[key] = rng.choice([v + "/", v.upper(), v[:1], v * 3, ".." + v])
    return doc


def mutate_bytes(data, rng, n):
    """Byte-level edits: flip, insert, delete, truncate, splice a CBOR head."""
    b = bytearray(data)
    for _ in range(n):
        r = rng.random()
        if not b or r < 0.1:
            b.extend(rng.randbytes(rng.randint(1, 4)))
        elif r < 0.35:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif r < 0.5:
            b[rng.randrange(len(b))] = rng.choice([0x00, 0x1F, 0x5F, 0x7F, 0x9F, 0xBF, 0xFF, 0xF7, 0xC0, 0x1B])
        elif r < 0.65:
            i = rng.randrange(len(b))
            b[i:i] = rng.randbytes(rng.randint(1, 9))
        elif r < 0.8:
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 8)]
        elif r < 0.9:
            b = b[:rng.randrange(len(b) + 1)]
        else:
            i = rng.randrange(len(b) + 1)
            b[i:i] = b[rng.randrange(len(b)):][:rng.randint(1, 32)]
    return bytes(b)


def deep_nesting(depth, opener=b"\x81", leaf=b"\x00"):
    return opener * depth + leaf


def encode_json(doc):
    return json.dumps(doc, allow_nan=True).encode()


def encode_cbor(doc):
    return cbor2.dumps(doc)


def is_finite_tree(doc):
    if isinstance(doc, float):
        return math.isfinite(doc)
    if isinstance(doc, dict):
        return all(is_finite_tree(v) for v in doc.values())
    if isinstance(doc, list):
        return all(is_finite_tree(v) for v in doc)
    return True


def generators():
    """name -> (seed bytes list, mutator(rng) -> bytes) for every target."""
    inst, rep, brd, cat = instruction(), report(), board(), catalog_doc()
    signed = signed_instruction()
    cbor_seeds = [wire.encode(inst), wire.encode(rep), signed, deep_nesting(12), deep_nesting(7, b"\xa1\x00")]
    toml = catalog_text()
    mq = mqtt_stream()

    def pick(rng, seeds):
        return mutate_bytes(rng.choice(seeds), rng, rng.randint(1, 6))

    return {
        "cbor": lambda rng: pick(rng, cbor_seeds) if rng.random() < 0.85 else rng.randbytes(rng.randint(0, 64)),
        "cose": lambda rng: pick(rng, [signed]) if rng.random() < 0.6 else
        _resign(mutate_tree(inst, rng, rng.randint(0, 3), _CBOR_ODD), rng),
        "mqtt": lambda rng: pick(rng, [mq]) if rng.random() < 0.8 else rng.randbytes(rng.randint(0, 40)),
        "schema": lambda rng: encode_cbor(mutate_tree(inst, rng, rng.randint(1, 4), _CBOR_ODD)),
        "wire": lambda rng: pick(rng, cbor_seeds) if rng.random() < 0.6 else
        encode_cbor(mutate_tree(rep, rng, rng.randint(1, 4), _CBOR_ODD)),
        "report": lambda rng: encode_cbor(mutate_tree(rep, rng, rng.randint(1, 4), _CBOR_ODD)),
        "board_device": lambda rng: encode_json(mutate_tree(brd, rng, rng.randint(1, 4))),
        "board_host": lambda rng: encode_json(mutate_tree(brd, rng, rng.randint(1, 4))),
        "catalog": lambda rng: encode_json(mutate_tree(cat, rng, rng.randint(1, 5))),
        "catalog_toml": lambda rng: mutate_bytes(toml, rng, rng.randint(1, 4)),
    }


def _resign(doc, rng):
    """A genuinely signed message around a mutated payload (passes the MAC, tests what follows)."""
    try:
        return wire.sign_instruction(doc, KEY, KID)
    except Exception:
        return signed_instruction()
