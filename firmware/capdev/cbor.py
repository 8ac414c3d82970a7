# CBOR (RFC 8949) for the wire subset: ints (64-bit), bytes, text, arrays,
# maps, false/true/null, floats, and tags the caller allows.
# dumps() is always deterministic (RFC 8949 section 4.2.1) because its bytes are MAC'd;
# loads() is strict and raises only CBORError. Pure: no I/O.
import struct

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_MAX_U64 = const(0xFFFFFFFFFFFFFFFF)
_INF = float("inf")

# Reasons carried by CBORError (tests and callers match on these). Those only
# decoding raises are in cbor_decode.py, which a device unloads between uses.
DEPTH = "nesting too deep"
KEYTYPE = "map key type not allowed"
RANGE = "int out of range"
TYPE = "type not supported"


class CBORError(ValueError):
    """Any encoding or decoding failure; ``reason`` is one of the constants above."""

    def __init__(self, reason, detail=""):
        super().__init__(reason + ": " + detail if detail else reason)
        self.reason = reason


class Tag:
    """A tagged item (major type 6) that the caller allowed."""

    def __init__(self, number, value):
        self.number = number
        self.value = value

    # No __ne__: both runtimes derive != from __eq__. No __repr__: nothing prints a Tag.
    def __eq__(self, other):
        return isinstance(other, Tag) and other.number == self.number and other.value == self.value


# ---- encoding ---------------------------------------------------------------

def append_head(out, major, n):
    """Append the shortest head of major type ``major`` with argument ``n`` to
    the bytearray ``out`` (RFC 8949 section 4.2.1, first rule); cose.py uses it
    to stream an item's content."""
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        # byte by byte: to_bytes() would allocate a bytes object per head
        out.append(mt | 25)
        out.append(n >> 8)
        out.append(n & 0xFF)
    elif n < 0x100000000:
        out.append(mt | 26)
        out.append(n >> 24)
        out.append((n >> 16) & 0xFF)
        out.append((n >> 8) & 0xFF)
        out.append(n & 0xFF)
    else:
        out.append(mt | 27)
        out.extend(n.to_bytes(8, "big"))


def _half_bits(bits32):
    """Half-float bits equal to the single-float ``bits32``, or None if not exact."""
    sign = (bits32 >> 16) & 0x8000
    exp = (bits32 >> 23) & 0xFF
    mant = bits32 & 0x7FFFFF
    if exp == 0:
        # zero stays zero; single subnormals are far below half's range
        return sign if mant == 0 else None
    e = exp - 127
    if -14 <= e <= 15:
        if mant & 0x1FFF:
            return None
        return sign | ((e + 15) << 10) | (mant >> 13)
    if -24 <= e < -14:
        # half subnormal: value = h * 2**-24 with h < 1024
        full = mant | 0x800000
        shift = -1 - e
        if full & ((1 << shift) - 1):
            return None
        return sign | (full >> shift)
    return None


def _float(out, x):
    # Shortest of half/single/double that keeps the value (section 4.2.1); struct
    # 'e' is optional on MicroPython, so half precision is done by hand.
    if x != x:
        out.extend(b"\xf9\x7e\x00")
        return
    if x == _INF:
        out.extend(b"\xf9\x7c\x00")
        return
    if x == -_INF:
        out.extend(b"\xf9\xfc\x00")
        return
    try:
        single = struct.pack(">f", x)
        exact = struct.unpack(">f", single)[0] == x
    except OverflowError:
        exact = False
    if exact:
        h = _half_bits(int.from_bytes(single, "big"))
        if h is not None:
            out.append(0xF9)
            out.extend(h.to_bytes(2, "big"))
        else:
            out.append(0xFA)
            out.extend(single)
    else:
        out.append(0xFB)
        out.extend(struct.pack(">d", x))



def _key_bytes(k):
    t = type(k)
    if t is not int and t is not str and t is not bytes:
        raise CBORError(KEYTYPE, type(k).__name__)
    kb = bytearray()
    _enc(kb, k, 0, 0)
    return kb  # bytearrays compare bytewise; no copy needed


# Built once: a tuple literal in isinstance() is built anew, on the heap, at
# every call on MicroPython.
_BYTES_TYPES = (bytes, bytearray, memoryview)
_ARRAY_TYPES = (list, tuple)


def _sort_keys(encs, keys):
    # Insertion sort of the encoded keys, carrying the keys along: no
    # (encoding, key) tuple per entry, and device maps are small. Distinct
    # keys have distinct encodings, so the order is total.
    for i in range(1, len(encs)):
        e = encs[i]
        k = keys[i]
        j = i - 1
        while j >= 0 and encs[j] > e:
            encs[j + 1] = encs[j]
            keys[j + 1] = keys[j]
            j -= 1
        encs[j + 1] = e
        keys[j + 1] = k


def _enc(out, obj, depth, max_depth):
    if obj is None:
        out.append(0xF6)
    elif obj is False:
        out.append(0xF4)
    elif obj is True:
        out.append(0xF5)
    elif isinstance(obj, int):
        if obj >= 0:
            if obj > _MAX_U64:
                raise CBORError(RANGE, "above 2**64-1")
            append_head(out, 0, obj)
        else:
            n = -1 - obj
            if n > _MAX_U64:
                raise CBORError(RANGE, "below -2**64")
            append_head(out, 1, n)
    elif isinstance(obj, str):
        b = obj.encode("utf-8")
        append_head(out, 3, len(b))
        out.extend(b)
    elif isinstance(obj, _BYTES_TYPES):
        append_head(out, 2, len(obj))
        out.extend(obj)
    elif isinstance(obj, float):
        _float(out, obj)
    elif isinstance(obj, _ARRAY_TYPES):
        depth += 1
        if depth > max_depth:
            raise CBORError(DEPTH, "limit %d" % max_depth)
        append_head(out, 4, len(obj))
        for item in obj:
            _enc(out, item, depth, max_depth)
    elif isinstance(obj, dict):
        depth += 1
        if depth > max_depth:
            raise CBORError(DEPTH, "limit %d" % max_depth)
        # Keys in bytewise order of their encodings (section 4.2.1); dict order
        # differs between runtimes, so never rely on it.
        n = len(obj)
        keys = list(obj)
        encs = [None] * n
        for i in range(n):
            encs[i] = _key_bytes(keys[i])
        _sort_keys(encs, keys)
        append_head(out, 5, n)
        for i in range(n):
            out.extend(encs[i])
            _enc(out, obj[keys[i]], depth, max_depth)
    elif isinstance(obj, Tag):
        depth += 1
        if depth > max_depth:
            raise CBORError(DEPTH, "limit %d" % max_depth)
        if type(obj.number) is not int or not 0 <= obj.number <= _MAX_U64:
            raise CBORError(RANGE, "tag number")
        append_head(out, 6, obj.number)
        _enc(out, obj.value, depth, max_depth)
    else:
        raise CBORError(TYPE, type(obj).__name__)


def dumps(obj, max_depth=16):
    """Deterministic CBOR encoding of ``obj``; CBORError for anything outside the subset."""
    out = bytearray()
    _enc(out, obj, 0, max_depth)
    return bytes(out)


# ---- decoding ---------------------------------------------------------------

def loads(data, max_depth=16, max_size=8192, allow_tags=()):
    """Decode exactly one CBOR item filling ``data``; CBORError on anything else.

    ``max_size`` caps the input and every declared length; ``allow_tags`` lists
    the tag numbers that come back as ``Tag`` objects (all others are rejected).
    The decoder lives in cbor_decode.py: a device decodes only the rare
    instruction, so it can unload that code between messages.
    """
    from capdev.cbor_decode import loads as decode

    return decode(data, max_depth, max_size, allow_tags)


# Loaded with the encoder so the first loads() allocates only its result; a
# device unloads it again between instructions (agent.Agent.trim).
__import__("capdev.cbor_decode")
