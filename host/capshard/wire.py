"""The wire protocol, provider side: topics, CBOR in and out, signed instructions.

The contract is docs/protocol.md; the device side is firmware/capdev/protocol.py.
Uses cbor2 and hmac; tests check the COSE_Mac0 bytes are those pycose makes
and that both sides agree.
"""

import hashlib
import hmac
import io
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


def decode(data, max_bytes=MAX_MESSAGE_BYTES):
    """Strict decode of one CBOR map: no trailing bytes, bounded size."""
    if len(data) > max_bytes:
        raise WireError(f"message of {len(data)} bytes exceeds the {max_bytes}-byte cap")
    stream = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(stream).decode()
    except (cbor2.CBORDecodeError, RecursionError) as e:
        raise WireError(f"malformed CBOR: {e}") from None
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


def sign_instruction(payload, key, kid):
    """COSE_Mac0 (HMAC 256/256) over the canonical CBOR of ``payload``.
    Built directly (it is on the provider's hot path); byte for byte what
    pycose's Mac0Message makes (tests/service/test_wire_sign.py)."""
    body = encode(payload)
    to_mac = cbor2.dumps(["MAC0", _PROTECTED, b"", body])
    tag = hmac.new(key, to_mac, hashlib.sha256).digest()
    return cbor2.dumps(cbor2.CBORTag(_MAC0_TAG, [_PROTECTED, {_KID: kid}, body, tag]))


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
