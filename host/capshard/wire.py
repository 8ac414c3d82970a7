"""The wire protocol, provider side: topics, CBOR in and out, signed instructions.

The contract is docs/protocol.md; the device side is firmware/capdev/protocol.py.
Uses cbor2 and hmac; tests check the COSE_Mac0 bytes are those pycose makes
and that both sides agree.
"""

import hashlib
import hmac
import io
import operator
import uuid

import cbor2

VERSION = 1
PREFIX = "capshard/v1/dev/"
DEVICE_KINDS = ("birth", "qos", "ack", "state", "health")
INSTRUCTION = "inst"
MAX_MESSAGE_BYTES = 4096
DEFAULT_TTL_S = 60


class WireError(ValueError):
    """A message the provider cannot accept; the text says why."""


def topic(device_id, kind):
    return f"{PREFIX}{device_id}/{kind}"


def subscription(kind, share_group=None):
    base = f"{PREFIX}+/{kind}"
    return f"$share/{share_group}/{base}" if share_group else base


def split_topic(name):
    """(device_id, kind) of a device topic; WireError for anything else."""
    if not name.startswith(PREFIX):
        raise WireError(f"unknown topic {name!r}")
    parts = name[len(PREFIX):].split("/")
    if len(parts) != 2 or not parts[0] or parts[1] not in DEVICE_KINDS:
        raise WireError(f"unknown topic {name!r}")
    return parts[0], parts[1]


def encode(obj):
    return cbor2.dumps(obj, canonical=True)


# Fast path for the instructions the provider signs. cbor2's canonical mode
# sorts every map's keys on each call (most of the body's encoding cost); our
# instruction and op maps have known keys, so they are rebuilt with their keys
# in canonical order (RFC 8949 4.2.1: ordered by their encoded bytes, for short
# text keys shortest first, then bytewise) and encoded plainly. Only plain
# scalars are allowed as values: canonical mode also shortens floats and sorts
# nested maps and sets, which plain encoding does not. Anything else goes to
# the canonical encoder. tests/service/test_wire_sign.py checks the bytes.
_INSTRUCTION_KEYS = frozenset(("v", "dev", "id", "seq", "iat", "ttl_s", "full", "ops", "rebirth"))
_OP_KEYS = frozenset(("op", "shard", "ver", "slot", "cpu", "mem_kb", "bw_kbps", "prio", "dur_s", "alt", "module",
                      "alt_module"))
_PLAIN_TYPES = frozenset((str, int, bool, type(None)))
_MAX_LAYOUTS = 64
_instruction_layouts, _op_layouts = {}, {}


def _canonical_key_order(keys):
    return tuple(sorted(keys, key=cbor2.dumps))


def _layout(cache, keys, known):
    """(keys in canonical order, a getter of their values) for a map whose
    keys were inserted in the order ``keys``; None for keys not ``known``.
    Few layouts occur (one per place that builds the maps), so they are kept."""
    layout = cache.get(keys)
    if layout is None and len(keys) >= 2 and known.issuperset(keys) and len(cache) < _MAX_LAYOUTS:
        ordered = _canonical_key_order(keys)
        layout = cache[keys] = (ordered, operator.itemgetter(*ordered))
    return layout


def _canonical_op(op):
    """``op`` with its keys in canonical order; None when the fast path
    cannot vouch for its encoding."""
    layout = type(op) is dict and _layout(_op_layouts, tuple(op), _OP_KEYS)
    if not layout:
        return None
    keys, get = layout
    values = get(op)
    return dict(zip(keys, values)) if _PLAIN_TYPES.issuperset(map(type, values)) else None


def _encode_instruction(inst):
    """encode(inst), byte for byte: the fast path when it has the known shape."""
    layout = type(inst) is dict and type(inst.get("ops")) is list and \
        _layout(_instruction_layouts, tuple(inst), _INSTRUCTION_KEYS)
    if not layout:
        return encode(inst)
    keys, get = layout
    values = list(get(inst))
    at = keys.index("ops")
    ops = [_canonical_op(op) for op in values[at]]
    values[at] = None   # the one value that is not a scalar: checked apart
    if None in ops or not _PLAIN_TYPES.issuperset(map(type, values)):
        return encode(inst)
    values[at] = ops
    return cbor2.dumps(dict(zip(keys, values)))


def decode(data, max_bytes=MAX_MESSAGE_BYTES):
    """Strict decode of one CBOR map: no trailing bytes, bounded size."""
    if len(data) > max_bytes:
        raise WireError(f"message of {len(data)} bytes exceeds the {max_bytes}-byte cap")
    stream = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(stream).decode()
    except (cbor2.CBORDecodeError, RecursionError) as e:
        raise WireError(f"malformed CBOR: {e}") from None
    except Exception as e:
        # cbor2 hands the content of well-known tags to library code (regex 35
        # -> re.compile, decimal 4, rational 30, epoch date 100...), which
        # raises TypeError, decimal.Overflow, OverflowError... on bad content.
        # Nothing of ours runs inside decode(): any error is the input's.
        raise WireError(f"malformed CBOR: bad tagged value: {type(e).__name__}: {e}") from None
    if stream.tell() != len(data):
        raise WireError(f"malformed CBOR: {len(data) - stream.tell()} trailing bytes")
    if not isinstance(obj, dict):
        raise WireError("message must be a CBOR map")
    if obj.get("v") != VERSION:
        raise WireError(f"unsupported protocol version {obj.get('v')!r}")
    return obj


def new_instruction_id():
    return uuid.uuid4().hex[:16]


# COSE_Mac0 pieces (RFC 9052): the protected header {alg (1): HMAC 256/256 (5)}
# encoded once, and the unprotected header's key id label (4).
_PROTECTED = cbor2.dumps({1: 5})
_KID = 4
_MAC0_TAG = 17
# The two arrays around the body are written byte by byte: a cbor2.dumps call
# costs a few microseconds however small its input, and these hold only byte
# strings. _MAC_HEAD is the MAC structure ["MAC0", protected, b"", body] up to
# the body; _COSE_HEAD the tagged [protected, {kid}, body, tag] up to the kid.
_MAC_HEAD = b"\x84" + cbor2.dumps("MAC0") + cbor2.dumps(_PROTECTED) + cbor2.dumps(b"")
_COSE_HEAD = cbor2.dumps(cbor2.CBORTag(_MAC0_TAG, []))[:-1] + b"\x84" + cbor2.dumps(_PROTECTED) + \
    b"\xa1" + cbor2.dumps(_KID)


def _bstr(data):
    """CBOR byte string: the head (major type 2, shortest length form), then the bytes."""
    n = len(data)
    if n < 24:
        head = bytes((0x40 | n,))
    elif n < 0x100:
        head = bytes((0x58, n))
    elif n < 0x10000:
        head = b"\x59" + n.to_bytes(2, "big")
    else:
        head = b"\x5a" + n.to_bytes(4, "big")
    return head + data


def sign_instruction(payload, key, kid):
    """COSE_Mac0 (HMAC 256/256) over the canonical CBOR of ``payload``.
    Built directly (it is on the provider's hot path); byte for byte what
    pycose's Mac0Message makes (tests/service/test_wire_sign.py)."""
    body = _bstr(_encode_instruction(payload))
    tag = hmac.new(key, _MAC_HEAD + body, hashlib.sha256).digest()
    kid_item = _bstr(kid) if type(kid) is bytes else cbor2.dumps(kid)
    return _COSE_HEAD + kid_item + body + _bstr(tag)


def make_instruction(device_id, seq, ops, full, issued_at, ttl_s=DEFAULT_TTL_S, instruction_id=None,
                     rebirth=False):
    """``rebirth``: ask the device to announce itself again after applying
    (a provider that has no record of a device already online)."""
    inst = {
        "v": VERSION,
        "dev": device_id,
        "id": instruction_id or new_instruction_id(),
        "seq": seq,
        "iat": int(issued_at),
        "ttl_s": ttl_s,
        "full": full,
        "ops": ops,
    }
    if rebirth:
        inst["rebirth"] = True
    return inst
