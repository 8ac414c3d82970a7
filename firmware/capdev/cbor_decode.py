# CBOR decoding (RFC 8949) for the wire subset; the other half of cbor.py,
# which re-exports loads(). Strict: raises only CBORError. Pure: no I/O.
import struct
from math import ldexp

from capdev.cbor import DEPTH, KEYTYPE, CBORError, Tag

# Reasons carried by CBORError that only decoding raises (see cbor.py for the rest).
TRUNCATED = "truncated"
TRAILING = "trailing bytes"
TAG = "tag not allowed"
LENGTH = "length beyond input"
SIZE = "exceeds max_size"
UTF8 = "invalid utf-8"
DUPKEY = "duplicate map key"
INDEF = "indefinite length"
SIMPLE = "simple value not allowed"
RESERVED = "reserved additional info"

_INF = float("inf")
_NAN = float("nan")
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
        mv = self.mv
        v = mv[p]
        # byte by byte: a memoryview slice would be allocated per head
        for i in range(p + 1, p + n):
            v = (v << 8) | mv[i]
        return v

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
            # sized once (n is bounded by the input above), not grown per item
            out = [None] * n
            for i in range(n):
                out[i] = self.item(depth)
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
