"""The provider's COSE_Mac0 (built with cbor2 and hmac) is byte for byte what
pycose makes, and pycose verifies it."""

import random

from pycose.algorithms import HMAC256
from pycose.headers import KID, Algorithm
from pycose.keys import SymmetricKey
from pycose.messages import CoseMessage, Mac0Message

from capshard import wire


def pycose_sign(payload, key, kid):
    msg = Mac0Message(phdr={Algorithm: HMAC256}, uhdr={KID: kid}, payload=wire.encode(payload))
    msg.key = SymmetricKey(k=key)
    return msg.encode()


def test_signed_instruction_is_what_pycose_makes_and_verifies():
    key = bytes(range(32))
    ops = [{"op": "activate", "shard": "vpn-aes", "ver": "1.2.0", "cpu": 20, "mem_kb": 48, "bw_kbps": 6000,
            "prio": "high", "dur_s": 300, "alt": None, "slot": "vpn.cipher", "module": "capdev.shards.aes"}]
    for inst in (wire.make_instruction("gw-1", 7, ops, True, 1_700_000_000),
                 wire.make_instruction("gw-ü", 2 ** 40, [], False, 0, 5, rebirth=True),
                 wire.make_instruction("d" * 200, 1, ops * 20, False, 1_700_000_000.9)):
        for kid in (b"gw-1#1", b"k" * 300):
            mine = wire.sign_instruction(inst, key, kid)
            assert mine == pycose_sign(inst, key, kid)
            msg = CoseMessage.decode(mine)
            msg.key = SymmetricKey(k=key)
            assert msg.verify_tag()
            assert wire.decode(msg.payload) == inst


# ---- the fast canonical encoding (wire._encode_instruction) ------------------

_WORDS = ["", "a", "vpn-aes", "ü", "x" * 23, "x" * 24, "y" * 300, "capdev.shards.aes", "\u2603" * 9]
_INTS = [0, 1, 23, 24, 255, 256, 65535, 65536, 2 ** 32, 2 ** 64 - 1, 2 ** 64, 2 ** 70, -1, -24, -25, -(2 ** 64) - 1]


def _scalar(rng):
    return rng.choice([rng.choice(_WORDS), rng.choice(_INTS), rng.randrange(-10 ** 6, 10 ** 6),
                       True, False, None])


# op key sets in various insertion orders; fewer than the layouts the fast path keeps
_OP_LAYOUTS = [(lambda r: r.sample(sorted(wire._OP_KEYS), r.randint(2, len(wire._OP_KEYS))))(random.Random(i))
               for i in range(30)] + [sorted(wire._OP_KEYS), ["op", "shard"]]


def _random_op(rng):
    return {k: _scalar(rng) for k in rng.choice(_OP_LAYOUTS)}


def _random_instruction(rng):
    inst = wire.make_instruction(rng.choice(_WORDS), rng.choice(_INTS[:10]),
                                 [_random_op(rng) for _ in range(rng.randint(0, 12))], rng.random() < 0.5,
                                 rng.choice([0, 1_700_000_000, 1_700_000_000.7]), rng.choice([1, 60, 3600]),
                                 rebirth=rng.random() < 0.2)
    if rng.random() < 0.5:   # the same map with its keys inserted in another order
        inst = dict(reversed(inst.items()))
    return inst


def _count_fallbacks(monkeypatch):
    """wire.encode (the canonical path) counting the fast path's fallbacks to it."""
    calls = []
    canonical = wire.encode
    monkeypatch.setattr(wire, "encode", lambda obj: calls.append(obj) or canonical(obj))
    return calls, canonical


def test_fast_encoding_is_the_canonical_encoding(monkeypatch):
    monkeypatch.setattr(wire, "_op_layouts", {})
    monkeypatch.setattr(wire, "_instruction_layouts", {})
    rng = random.Random(8949)
    fallbacks, canonical = _count_fallbacks(monkeypatch)
    for _ in range(3000):
        inst = _random_instruction(rng)
        assert wire._encode_instruction(inst) == canonical(inst)
    assert not fallbacks   # the fast path did them all


def _odd_instructions():
    """Shapes the fast path must not vouch for: each goes to the canonical encoder."""
    import enum

    class Level(enum.IntEnum):
        HIGH = 3

    op = {"op": "activate", "shard": "s", "ver": "1.0.0", "cpu": 20}
    base = wire.make_instruction("d", 1, [op], True, 0)
    yield dict(base, extra=1)                                  # unknown instruction key
    yield dict(base, ops=[dict(op, extra=1)])                  # unknown op key
    yield dict(base, ops=[dict(op, cpu=1.5)])                  # float (canonical: shortest form)
    yield dict(base, ops=[dict(op, cpu=100000.0)])
    yield dict(base, ttl_s=60.0)
    yield dict(base, ops=[dict(op, alt={"z": 1, "a": 2})])     # nested map (canonical: sorted)
    yield dict(base, ops=[dict(op, alt=[3, {"bb": 1, "a": 0}])])
    yield dict(base, ops=[dict(op, alt=frozenset({"b", "a"}))])  # set (canonical: sorted)
    yield dict(base, ops=[dict(op, cpu=Level.HIGH)])           # int subclass
    yield dict(base, ops=[dict(op, ver=b"\x01")])              # bytes
    yield dict(base, ops=[{"op": "noop"}])                     # one key
    yield dict(base, ops=[["activate"]])                       # not a map
    yield dict(base, ops=({"op": "deactivate", "shard": "s"},))  # not a list
    yield {1: 5, "ops": []}                                    # non-text key


def test_fast_encoding_falls_back_for_what_it_does_not_know(monkeypatch):
    fallbacks, canonical = _count_fallbacks(monkeypatch)
    for inst in _odd_instructions():
        assert wire._encode_instruction(inst) == canonical(inst), inst
        assert fallbacks[-1:] == [inst], inst


def test_signature_envelope_over_lengths_and_shapes():
    """The hand-built COSE arrays, around bodies and key ids of every length form."""
    rng = random.Random(9052)
    key = bytes(range(32))
    shapes = [_random_instruction(rng) for _ in range(40)] + list(_odd_instructions())
    shapes.append(wire.make_instruction("d", 1, [{"op": "deactivate", "shard": "s" * 1000}] * 70, False, 0))
    for inst in shapes:
        kid = rng.choice([b"", b"k" * 23, b"k" * 24, b"k" * 255, b"k" * 256, b"k" * 65536])
        assert wire.sign_instruction(inst, key, kid) == pycose_sign(inst, key, kid)


def test_a_key_id_that_is_not_bytes_is_encoded_as_cbor2_would():
    import hashlib
    import hmac

    import cbor2
    key, inst = bytes(range(32)), wire.make_instruction("d", 1, [], True, 0)
    body = wire.encode(inst)
    tag = hmac.new(key, cbor2.dumps(["MAC0", wire._PROTECTED, b"", body]), hashlib.sha256).digest()
    expected = cbor2.dumps(cbor2.CBORTag(17, [wire._PROTECTED, {4: "text-kid"}, body, tag]))
    assert wire.sign_instruction(inst, key, "text-kid") == expected
