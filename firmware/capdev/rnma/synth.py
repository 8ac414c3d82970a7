# Synthetic traffic with realistic shapes, as raw IPv4 frames (link type 101),
# for the demo and tests: a game, a voice call, a video stream, a bulk
# download, web browsing and online banking. Deterministic for a given seed.
from capdev.rnma import packet as pk

SHAPES = ("game", "call", "video", "bulk", "browsing", "banking")
CLIENT = b"\xc0\xa8\x01\x17"  # 192.168.1.23


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


def ipv4(proto, src, sport, dst, dport, payload, flags=0x18, dscp=0):
    """A raw IPv4 frame carrying a UDP datagram or a TCP segment."""
    if proto == pk.UDP:
        l4 = bytes((sport >> 8, sport & 255, dport >> 8, dport & 255,
                    (8 + len(payload)) >> 8, (8 + len(payload)) & 255, 0, 0))
    else:
        l4 = bytes((sport >> 8, sport & 255, dport >> 8, dport & 255, 0, 0, 0, 1, 0, 0, 0, 1,
                    0x50, flags, 0xFF, 0xFF, 0, 0, 0, 0))
    total = 20 + len(l4) + len(payload)
    ip = bytes((0x45, dscp << 2, total >> 8, total & 255, 0, 0, 0x40, 0, 64, proto, 0, 0)) + src + dst
    return ip + l4 + payload


def client_hello(name):
    """A minimal TLS 1.2 ClientHello carrying the SNI extension."""
    n = name.encode()
    sni = bytes((0, 0, (len(n) + 5) >> 8, (len(n) + 5) & 255, (len(n) + 3) >> 8, (len(n) + 3) & 255,
                 0, len(n) >> 8, len(n) & 255)) + n
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    body += bytes((len(sni) >> 8, len(sni) & 255)) + sni
    hs = bytes((1, 0, len(body) >> 8, len(body) & 255)) + body
    return bytes((0x16, 3, 1, len(hs) >> 8, len(hs) & 255)) + hs


def _tcp_open(t, c, cp, s, sp, rtt):
    yield t, ipv4(pk.TCP, c, cp, s, sp, b"", 0x02)
    yield t + rtt, ipv4(pk.TCP, s, sp, c, cp, b"", 0x12)
    yield t + rtt + 1, ipv4(pk.TCP, c, cp, s, sp, b"", 0x10)


def shape(kind, start_ms=0, duration_ms=10000, seed=1, server_octet=10):
    """Yield (ts_ms, frame) for one kind of traffic, in time order."""
    r = Rand(seed)
    server = bytes((203, 0, 113, server_octet))
    cport = 40000 + r.below(20000)
    end = start_ms + duration_ms
    t = start_ms
    if kind == "game":
        # 30 small updates a second each way to a game server port.
        while t < end:
            yield t, ipv4(pk.UDP, CLIENT, cport, server, 27015, bytes(40 + r.below(60)))
            yield t + 15 + r.below(10), ipv4(pk.UDP, server, 27015, CLIENT, cport, bytes(80 + r.below(120)))
            t += 33
    elif kind == "call":
        # RTP, Opus (dynamic PT 111), 20 ms frames each way.
        seq = r.below(60000)
        ssrc_c = bytes((1, 2, 3, 4))
        ssrc_s = bytes((9, 8, 7, 6))
        while t < end:
            hdr = bytes((0x80, 111, (seq >> 8) & 255, seq & 255, 0, 0, 0, 0))
            yield t, ipv4(pk.UDP, CLIENT, cport, server, 16384, hdr + ssrc_c + bytes(80 + r.below(40)), dscp=46)
            yield t + 3, ipv4(pk.UDP, server, 16384, CLIENT, cport, hdr + ssrc_s + bytes(80 + r.below(40)), dscp=46)
            seq = (seq + 1) & 0xFFFF
            t += 20
    elif kind in ("video", "bulk", "browsing", "banking"):
        names = {"video": "rr4---sn-a5meknzs.googlevideo.com", "bulk": None,
                 "browsing": "www.example.org", "banking": "online.examplebank.com"}
        sp = 80 if kind == "bulk" else 443
        for x in _tcp_open(t, CLIENT, cport, server, sp, 20 + r.below(20)):
            yield x
        t += 50
        if kind == "bulk":
            yield t, ipv4(pk.TCP, CLIENT, cport, server, sp,
                          b"GET /images/installer.iso HTTP/1.1\r\nHost: mirror.example.net\r\n\r\n")
        else:
            yield t, ipv4(pk.TCP, CLIENT, cport, server, sp, client_hello(names[kind]))
        t += 30
        while t < end:
            if kind == "video":
                # 4-second chunks fetched in 1-second bursts at ~8 Mbit/s.
                for i in range(700):
                    yield t + i, ipv4(pk.TCP, server, sp, CLIENT, cport, bytes(1400))
                    if i % 2:
                        yield t + i, ipv4(pk.TCP, CLIENT, cport, server, sp, b"", 0x10)
                t += 4000
            elif kind == "bulk":
                for i in range(20):
                    yield t + i // 4, ipv4(pk.TCP, server, sp, CLIENT, cport, bytes(1460))
                yield t + 5, ipv4(pk.TCP, CLIENT, cport, server, sp, b"", 0x10)
                t += 10
            else:
                # A page: request, a few responses, think time.
                yield t, ipv4(pk.TCP, CLIENT, cport, server, sp, bytes(300 + r.below(400)))
                for i in range(3 + r.below(10)):
                    yield t + 20 + i, ipv4(pk.TCP, server, sp, CLIENT, cport, bytes(1200))
                t += 1000 + r.below(4000)
    else:
        raise ValueError("unknown traffic shape '" + str(kind) + "'")


def mix(kinds, duration_ms=10000, seed=1):
    """Several shapes at once, merged in time order (one frame held per shape)."""
    gens = []
    heads = []
    i = 0
    for k in kinds:
        g = shape(k, 0, duration_ms, seed + i, 10 + i)
        i += 1
        gens.append(g)
        heads.append(next(g, None))
    while True:
        best = -1
        for j in range(len(heads)):
            if heads[j] is not None and (best < 0 or heads[j][0] < heads[best][0]):
                best = j
        if best < 0:
            return
        yield heads[best]
        heads[best] = next(gens[best], None)


def feed(monitor, frames, tick_ms=1000):
    """Replay synthetic frames into a monitor, ticking once per tick_ms of
    traffic time; returns the QoS reports the monitor produced."""
    reports = []
    next_tick = None
    for ts, frame in frames:
        if next_tick is None:
            next_tick = ts + tick_ms
        while ts >= next_tick:
            rep = monitor.tick(next_tick - monitor._t0 if monitor._t0 is not None else 0)
            if rep is not None:
                reports.append(rep)
            next_tick += tick_ms
        monitor.packet(ts, pk.RAW, frame)
    return reports
