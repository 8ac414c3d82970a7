# Synthetic traffic with realistic shapes, as raw IPv4 frames (link type 101),
# for the demo and tests: a game, a voice call, a video stream, a bulk
# download, web browsing and online banking. Deterministic for a given seed.
# What only hosts and tests use (one-off frames, mixes, feeding a monitor)
# is in synth_tools.py, which a device never loads.
from capdev.rnma import packet as pk

SHAPES = ("game", "call", "video", "bulk", "browsing", "banking")
CLIENT = b"\xc0\xa8\x01\x17"  # 192.168.1.23
_BIG_FRAMES = ("video", "bulk", "browsing", "banking")  # frames up to 1500 bytes


class Rand:
    """xorshift32: small, portable, reproducible."""

    def __init__(self, seed):
        self.s = (seed * 2654435761 + 1) & 0xFFFFFFFF or 1

    def next(self):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s

    def below(self, n):
        return self.next() % n


class FrameBuffer:
    """Builds the same frames as synth_tools.ipv4() in one reusable buffer,
    without allocating per frame: a frame (a memoryview) is valid until the
    next one. For a consumer that parses each frame at once, as the monitor does;
    at video rates this keeps a small heap from filling with dead frames."""

    def __init__(self, size=256):
        self.buf = bytearray(size)
        self.dirty = 0  # bytes past this offset are known to be zero

    def ipv4(self, proto, src, sport, dst, dport, payload, flags=0x18, dscp=0):
        zeros = isinstance(payload, int)
        n = payload if zeros else len(payload)
        hl = 28 if proto == pk.UDP else 40
        total = hl + n
        b = self.buf
        if total > len(b):
            b = self.buf = bytearray(total + 64)  # grows once to the largest frame
            self.dirty = 0
        b[0] = 0x45
        b[1] = dscp << 2
        b[2] = total >> 8
        b[3] = total & 255
        b[4] = b[5] = b[7] = b[10] = b[11] = 0
        b[6] = 0x40
        b[8] = 64
        b[9] = proto
        b[12:16] = src
        b[16:20] = dst
        b[20] = sport >> 8
        b[21] = sport & 255
        b[22] = dport >> 8
        b[23] = dport & 255
        if proto == pk.UDP:
            b[24] = (8 + n) >> 8
            b[25] = (8 + n) & 255
            b[26] = b[27] = 0
        else:
            for i in range(24, 40):
                b[i] = 0
            b[27] = b[31] = 1
            b[32] = 0x50
            b[33] = flags
            b[34] = b[35] = 0xFF
        if zeros:
            end = self.dirty if self.dirty < total else total
            for i in range(hl, end):
                b[i] = 0
            if self.dirty <= total:
                self.dirty = hl
        else:
            b[hl:total] = payload
            if self.dirty < total:
                self.dirty = total
        return memoryview(b)[:total]


def client_hello(name):
    """A minimal TLS 1.2 ClientHello carrying the SNI extension."""
    n = name.encode()
    sni = bytes((0, 0, (len(n) + 5) >> 8, (len(n) + 5) & 255, (len(n) + 3) >> 8, (len(n) + 3) & 255,
                 0, len(n) >> 8, len(n) & 255)) + n
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    body += bytes((len(sni) >> 8, len(sni) & 255)) + sni
    hs = bytes((1, 0, len(body) >> 8, len(body) & 255)) + body
    return bytes((0x16, 3, 1, len(hs) >> 8, len(hs) & 255)) + hs


def _tcp_open(make, t, c, cp, s, sp, rtt):
    yield t, make(pk.TCP, c, cp, s, sp, 0, 0x02)
    yield t + rtt, make(pk.TCP, s, sp, c, cp, 0, 0x12)
    yield t + rtt + 1, make(pk.TCP, c, cp, s, sp, 0, 0x10)


def shape(kind, start_ms=0, duration_ms=10000, seed=1, server_octet=10, reuse=False):
    """Yield (ts_ms, frame) for one kind of traffic, in time order.

    ``reuse``: frames are memoryviews into one FrameBuffer, each valid only
    until the next is taken (the live source, which parses them at once);
    otherwise each frame is its own bytes (hosts and tests)."""
    if reuse:
        # Sized up front for the shape's largest frame: it is allocated once, early.
        make = FrameBuffer(1536 if kind in _BIG_FRAMES else 256).ipv4
    else:
        from capdev.rnma.synth_tools import ipv4 as make
    r = Rand(seed)
    server = bytes((203, 0, 113, server_octet))
    cport = 40000 + r.below(20000)
    end = start_ms + duration_ms
    t = start_ms
    if kind == "game":
        # 30 small updates a second each way to a game server port.
        while t < end:
            yield t, make(pk.UDP, CLIENT, cport, server, 27015, 40 + r.below(60))
            yield t + 15 + r.below(10), make(pk.UDP, server, 27015, CLIENT, cport, 80 + r.below(120))
            t += 33
    elif kind == "call":
        # RTP, Opus (dynamic PT 111), 20 ms frames each way.
        seq = r.below(60000)
        ssrc_c = bytes((1, 2, 3, 4))
        ssrc_s = bytes((9, 8, 7, 6))
        while t < end:
            hdr = bytes((0x80, 111, (seq >> 8) & 255, seq & 255, 0, 0, 0, 0))
            yield t, make(pk.UDP, CLIENT, cport, server, 16384, hdr + ssrc_c + bytes(80 + r.below(40)), dscp=46)
            yield t + 3, make(pk.UDP, server, 16384, CLIENT, cport, hdr + ssrc_s + bytes(80 + r.below(40)), dscp=46)
            seq = (seq + 1) & 0xFFFF
            t += 20
    elif kind in _BIG_FRAMES:  # TCP: a handshake, a named request, then data
        names = {"video": "rr4---sn-a5meknzs.googlevideo.com", "bulk": None,
                 "browsing": "www.example.org", "banking": "online.examplebank.com"}
        sp = 80 if kind == "bulk" else 443
        for x in _tcp_open(make, t, CLIENT, cport, server, sp, 20 + r.below(20)):
            yield x
        t += 50
        if kind == "bulk":
            yield t, make(pk.TCP, CLIENT, cport, server, sp,
                          b"GET /images/installer.iso HTTP/1.1\r\nHost: mirror.example.net\r\n\r\n")
        else:
            yield t, make(pk.TCP, CLIENT, cport, server, sp, client_hello(names[kind]))
        t += 30
        while t < end:
            if kind == "video":
                # 4-second chunks fetched in 1-second bursts at ~8 Mbit/s.
                for i in range(700):
                    yield t + i, make(pk.TCP, server, sp, CLIENT, cport, 1400)
                    if i % 2:
                        yield t + i, make(pk.TCP, CLIENT, cport, server, sp, 0, 0x10)
                t += 4000
            elif kind == "bulk":
                for i in range(20):
                    yield t + i // 4, make(pk.TCP, server, sp, CLIENT, cport, 1460)
                yield t + 5, make(pk.TCP, CLIENT, cport, server, sp, 0, 0x10)
                t += 10
            else:
                # A page: request, a few responses, think time.
                yield t, make(pk.TCP, CLIENT, cport, server, sp, 300 + r.below(400))
                for i in range(3 + r.below(10)):
                    yield t + 20 + i, make(pk.TCP, server, sp, CLIENT, cport, 1200)
                t += 1000 + r.below(4000)
    else:
        raise ValueError("unknown traffic shape '" + str(kind) + "'")
