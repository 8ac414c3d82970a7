# COSE_Mac0 (RFC 9052 section 6.2) with HMAC 256/256 only: the signature on
# provider instructions. Raises only CoseError; pure apart from the HMAC shim.
from capdev import cbor
from capdev.crypto import constant_time_equal, hmac_key, hmac_sha256_keyed

TAG_MAC0 = 17
ALG_HMAC_256_256 = 5
_H_ALG = 1
_H_CRIT = 2
_H_KID = 4
_TAG_LEN = 32

# Reasons carried by CoseError.
MALFORMED = "malformed"
UNKNOWN_KID = "unknown key id"
BAD_TAG = "bad tag"
UNSUPPORTED_ALG = "unsupported alg"

# Canonical bstr of {1: 5}; built once, identical on both runtimes.
_PROTECTED = cbor.dumps({_H_ALG: ALG_HMAC_256_256})


class CoseError(ValueError):
    """A COSE_Mac0 message that must not be trusted; ``reason`` says why."""

    def __init__(self, reason, detail=""):
        super().__init__(reason + ": " + detail if detail else reason)
        self.reason = reason


def _mac_prefix(protected, payload_len):
    # MAC_structure = ["MAC0", protected bstr as sent, external_aad = h'', payload]
    # up to the payload's own bytes: the HMAC takes the payload after it, so
    # the payload is never copied into a joined structure.
    out = bytearray(b"\x84\x64MAC0")  # array(4), text(4) "MAC0"
    cbor.append_head(out, 2, len(protected))
    out.extend(protected)
    out.append(0x40)  # h''
    cbor.append_head(out, 2, payload_len)
    return out


# (key, its hmac_key()) for the last key used: a device MACs with one key, so its
# pads are computed once instead of per message.
_last_key = None


def _mac(key, protected, payload):
    global _last_key
    last = _last_key
    if last is None or last[0] != key:
        last = (bytes(key), hmac_key(key))
        _last_key = last
    return hmac_sha256_keyed(last[1], _mac_prefix(protected, len(payload)), payload)


def mac0_create(payload, key, kid):
    """Tagged COSE_Mac0 bytes: alg in the protected header, kid unprotected."""
    if not isinstance(payload, (bytes, bytearray)) or not isinstance(kid, (bytes, bytearray)):
        raise CoseError(MALFORMED, "payload and kid must be bytes")
    payload = bytes(payload)
    tag = _mac(key, _PROTECTED, payload)
    msg = [_PROTECTED, {_H_KID: bytes(kid)}, payload, tag]
    return cbor.dumps(cbor.Tag(TAG_MAC0, msg))


def _decode(data, max_size):
    try:
        obj = cbor.loads(data, max_depth=4, max_size=max_size, allow_tags=(TAG_MAC0,))
    except cbor.CBORError as e:
        raise CoseError(MALFORMED, str(e))
    if isinstance(obj, cbor.Tag):
        obj = obj.value  # only tag 17 gets through loads
    if not isinstance(obj, list) or len(obj) != 4:
        raise CoseError(MALFORMED, "not a COSE_Mac0 array of 4")
    protected, unprotected, payload, tag = obj
    if type(protected) is not bytes or type(unprotected) is not dict:
        raise CoseError(MALFORMED, "header buckets")
    if payload is None:
        raise CoseError(MALFORMED, "detached payload")
    if type(payload) is not bytes:
        raise CoseError(MALFORMED, "payload not bytes")
    if type(tag) is not bytes:
        raise CoseError(MALFORMED, "tag not bytes")
    if protected:
        try:
            prot = cbor.loads(protected, max_depth=2, max_size=max_size)
        except cbor.CBORError as e:
            raise CoseError(MALFORMED, "protected header: " + str(e))
        if type(prot) is not dict:
            raise CoseError(MALFORMED, "protected header not a map")
    else:
        prot = {}  # a zero-length bstr stands for the empty map
    return protected, prot, unprotected, payload, tag


def mac0_verify(data, keys, max_size=8192):
    """Check a COSE_Mac0 and return ``(kid, payload)``; CoseError otherwise.

    ``keys`` is the key itself (bytes) or a callable ``kid -> key or None``.
    """
    protected, prot, unprot, payload, tag = _decode(data, max_size)
    for label in prot:
        if label in unprot:
            raise CoseError(MALFORMED, "header label %r in both buckets" % (label,))
    if _H_CRIT in prot:
        raise CoseError(MALFORMED, "critical headers not supported")
    # alg must be integrity-protected; HMAC 256/64 (4) and friends are refused
    alg = prot.get(_H_ALG)
    if alg is None:
        raise CoseError(UNSUPPORTED_ALG, "missing in protected header")
    if type(alg) is not int or alg != ALG_HMAC_256_256:
        raise CoseError(UNSUPPORTED_ALG, str(alg))
    kid = unprot.get(_H_KID, prot.get(_H_KID))
    if kid is None:
        raise CoseError(UNKNOWN_KID, "missing")
    if type(kid) is not bytes:
        raise CoseError(MALFORMED, "kid not bytes")
    if isinstance(keys, (bytes, bytearray)):
        key = keys
    else:
        key = keys(kid)
        if key is None:
            raise CoseError(UNKNOWN_KID)
    if len(tag) != _TAG_LEN:
        raise CoseError(BAD_TAG, "length %d, want %d" % (len(tag), _TAG_LEN))
    expected = _mac(key, protected, payload)
    if not constant_time_equal(expected, tag):
        raise CoseError(BAD_TAG, "MAC mismatch")
    return kid, payload
