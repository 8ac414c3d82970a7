# CBOR (RFC 8949) for the wire subset: ints (64-bit), bytes, text, arrays,
# maps, false/true/null, floats, and tags the caller allows.
# dumps() is always deterministic (RFC 8949 section 4.2.1) because its bytes are MAC'd;
# loads() is strict and raises only CBORError. Pure: no I/O.
import struct
from math import ldexp

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_MAX_U64 = const(0xFFFFFFFFFFFFFFFF)
_INF = float("inf")
_NAN = float("nan")

# Reasons carried by CBORError (tests and callers match on these).
TRUNCATED = "truncated"
TRAILING = "trailing bytes"
TAG = "tag not allowed"
DEPTH = "nesting too deep"
LENGTH = "length beyond input"
SIZE = "exceeds max_size"
UTF8 = "invalid utf-8"
DUPKEY = "duplicate map key"
INDEF = "indefinite length"
SIMPLE = "simple value not allowed"
RESERVED = "reserved additional info"
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

    def __eq__(self, other):
        return isinstance(other, Tag) and other.number == self.number and other.value == self.value

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "Tag(%d, %r)" % (self.number, self.value)


# ---- encoding ---------------------------------------------------------------

def _head(out, major, n):
    # Shortest form of the argument (RFC 8949 section 4.2.1, first rule).
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(mt | 25)
        out.extend(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        out.append(mt | 26)
        out.extend(n.to_bytes(4, "big"))
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
            _head(out, 0, obj)
        else:
            n = -1 - obj
            if n > _MAX_U64:
                raise CBORError(RANGE, "below -2**64")
            _head(out, 1, n)
    elif isinstance(obj, str):
        b = obj.encode("utf-8")
        _head(out, 3, len(b))
        out.extend(b)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        _head(out, 2, len(obj))
        out.extend(obj)
    elif isinstance(obj, float):
        _float(out, obj)
    elif isinstance(obj, (list, tuple)):
        depth += 1
        if depth > max_depth:
            raise CBORError(DEPTH, "limit %d" % max_depth)
        _head(out, 4, len(obj))
        for item in obj:
            _enc(out, item, depth, max_depth)
    elif isinstance(obj, dict):
        depth += 1
        if depth > max_depth:
            raise CBORError(DEPTH, "limit %d" % max_depth)
        # Keys in bytewise order of their encodings (section 4.2.1); dict order
        # differs between runtimes, so never rely on it.
        # Distinct keys have distinct encodings, so tuples never compare values.
        items = [(_key_bytes(k), v) for k, v in obj.items()]
        items.sort()
        _head(out, 5, len(items))
        for kb, v in items:
            out.extend(kb)
            _enc(out, v, depth, max_depth)
    elif isinstance(obj, Tag):
        depth += 1
        if depth > max_depth:
            raise CBORError(DEPTH, "limit %d" % max_depth)
        if type(obj.number) is not int or not 0 <= obj.number <= _MAX_U64:
            raise CBORError(RANGE, "tag number")
        _head(out, 6, obj.number)
        _enc(out, obj.value, depth, max_depth)
    else:
        raise CBORError(TYPE, type(obj).__name__)


def dumps(obj, max_depth=16):
    """Deterministic CBOR encoding of ``obj``; CBORError for anything outside the subset."""
    out = bytearray()
    _enc(out, obj, 0, max_depth)
    return bytes(out)


# ---- decoding ---------------------------------------------------------------

def _check_utf8(mv, start, end):
    # Strict RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF.
    # MicroPython's own decoder accepts some of these, so both runtimes use this.
    i = start
    while i < end:
        c = mv[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            n, lo, hi = 1, 0x80, 0xBF
        elif 0xE0 <= c <= 0xEF:
            n = 2
            lo = 0xA0 if c == 0xE0 else 0x80
            hi = 0x9F if c == 0xED else 0xBF
        elif 0xF0 <= c <= 0xF4:
            n = 3
            lo = 0x90 if c == 0xF0 else 0x80
            hi = 0x8F if c == 0xF4 else 0xBF
        else:
            return False
        if i + n >= end:
            return False
        c2 = mv[i + 1]
        if c2 < lo or c2 > hi:
            return False
        for j in range(i + 2, i + 1 + n):
            if mv[j] & 0xC0 != 0x80:
                return False
        i += 1 + n
    return True


class _Decoder:
    def __init__(self, data, max_depth, max_size, allow_tags):
        self.mv = memoryview(data)
        self.end = len(data)
        self.pos = 0
        self.max_depth = max_depth
        self.max_size = max_size
        self.allow_tags = allow_tags

    def _arg(self, ai):
        # The head's argument for additional info 24..27 (big-endian, 1..8 bytes).
        n = 1 << (ai - 24)
        p = self.pos
        if p + n > self.end:
            raise CBORError(TRUNCATED, "in head")
        self.pos = p + n
        if n == 1:
            return self.mv[p]
        return int.from_bytes(self.mv[p:p + n], "big")

    def _length(self, n, unit):
        # Declared lengths are checked against the input and max_size before
        # anything is allocated: a 2**32-entry map must not reach the heap.
        if n > self.max_size:
            raise CBORError(SIZE, "length %d" % n)
        if n * unit > self.end - self.pos:
            raise CBORError(LENGTH, "length %d" % n)

    def item(self, depth):
        p = self.pos
        if p >= self.end:
            raise CBORError(TRUNCATED)
        ib = self.mv[p]
        self.pos = p + 1
        major = ib >> 5
        ai = ib & 31
        if major == 7:
            return self._simple(ai)
        if ai < 24:
            n = ai
        elif ai < 28:
            n = self._arg(ai)
        elif ai == 31:
            if major in (2, 3, 4, 5):
                raise CBORError(INDEF)
            raise CBORError(RESERVED, "31 with major type %d" % major)
        else:
            raise CBORError(RESERVED, str(ai))
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major == 2 or major == 3:
            self._length(n, 1)
            p = self.pos
            self.pos = p + n
            if major == 2:
                return bytes(self.mv[p:p + n])
            chunk = self.mv[p:p + n]
            # ASCII fast path; anything else gets the strict check
            if n and max(chunk) > 0x7F and not _check_utf8(self.mv, p, p + n):
                raise CBORError(UTF8)
            try:
                return str(chunk, "utf-8")
            except UnicodeError:
                raise CBORError(UTF8)
        depth += 1
        if depth > self.max_depth:
            raise CBORError(DEPTH, "limit %d" % self.max_depth)
        if major == 4:
            self._length(n, 1)
            out = []
            for _ in range(n):
                out.append(self.item(depth))
            return out
        if major == 5:
            self._length(n, 2)
            out = {}
            for _ in range(n):
                k = self.item(depth)
                t = type(k)
                if t is not int and t is not str and t is not bytes:
                    raise CBORError(KEYTYPE, type(k).__name__)
                if k in out:
                    raise CBORError(DUPKEY, repr(k)[:40])
                out[k] = self.item(depth)
            return out
        # major 6
        if n not in self.allow_tags:
            raise CBORError(TAG, str(n))
        return Tag(n, self.item(depth))

    def _simple(self, ai):
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai == 22:
            return None
        if ai == 25:
            h = self._arg(25)
            e = (h >> 10) & 0x1F
            m = h & 0x3FF
            if e == 0:
                v = ldexp(m, -24)
            elif e == 31:
                v = _INF if m == 0 else _NAN
            else:
                v = ldexp(m | 0x400, e - 25)
            return -v if h & 0x8000 else v
        if ai == 26 or ai == 27:
            p = self.pos
            n = 4 if ai == 26 else 8
            if p + n > self.end:
                raise CBORError(TRUNCATED, "in float")
            self.pos = p + n
            return struct.unpack_from(">f" if n == 4 else ">d", self.mv, p)[0]
        if ai == 31:
            raise CBORError(INDEF, "break")
        if 28 <= ai <= 30:
            raise CBORError(RESERVED, str(ai))
        if ai == 24:
            self._arg(24)
        # 0..19, 23 (undefined) and one-byte simple values are outside the subset
        raise CBORError(SIMPLE, str(ai))



def loads(data, max_depth=16, max_size=8192, allow_tags=()):
    """Decode exactly one CBOR item filling ``data``; CBORError on anything else.

    ``max_size`` caps the input and every declared length; ``allow_tags`` lists
    the tag numbers that come back as ``Tag`` objects (all others are rejected).
    """
    if len(data) > max_size:
        raise CBORError(SIZE, "input %d bytes" % len(data))
    d = _Decoder(data, max_depth, max_size, allow_tags)
    obj = d.item(0)
    if d.pos != d.end:
        raise CBORError(TRAILING, "%d bytes" % (d.end - d.pos))
    return obj
