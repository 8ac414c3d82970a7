# pcap and pcapng reader (struct only, no I/O beyond a file object) and a replay
# loop that feeds an agent at recorded or accelerated speed.
# Damage never raises: the reader stops at a truncated record and reports why in
# `error`; unknown pcapng blocks are skipped.
import struct

from capdev import platform

_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),  # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1000000),  # nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1000000),
}
_NG_SHB = b"\x0a\x0d\x0d\x0a"
_MAX_RECORD = 262144  # larger "packets" are corruption, not jumbo frames


class Reader:
    """Iterate (ts_ms, linktype, frame bytes) over a pcap or pcapng stream.

    ts_ms is an integer in milliseconds since the epoch of the capture clock.
    After iteration `error` holds the reason the stream ended early, or None.
    """

    def __init__(self, f):
        self._f = f
        self.error = None
        self.format = None
        self.records = 0
        self.skipped_blocks = 0

    def __iter__(self):
        head = self._f.read(4)
        if head == _NG_SHB:
            self.format = "pcapng"
            return self._pcapng(head)
        if head in _PCAP_MAGIC:
            self.format = "pcap"
            return self._pcap(head)
        self.error = "not a pcap or pcapng file (magic " + platform.hexlify(head) + ")"
        return iter(())

    def _pcap(self, magic):
        endian, div = _PCAP_MAGIC[magic]
        rest = self._f.read(20)
        if len(rest) < 20:
            self.error = "truncated pcap header"
            return
        linktype = struct.unpack(endian + "I", rest[16:20])[0] & 0x0FFFFFFF
        hfmt = endian + "IIII"
        while True:
            h = self._f.read(16)
            if not h:
                return
            if len(h) < 16:
                self.error = "truncated record header after " + str(self.records) + " records"
                return
            sec, frac, incl, _orig = struct.unpack(hfmt, h)
            if incl > _MAX_RECORD:
                self.error = "corrupt record length " + str(incl) + " after " + str(self.records) + " records"
                return
            data = self._f.read(incl)
            if len(data) < incl:
                self.error = "truncated record after " + str(self.records) + " records"
                return
            self.records += 1
            yield sec * 1000 + frac // div, linktype, data

    def _pcapng(self, first):
        endian = "<"
        links = []  # per interface: (linktype, ticks per second)
        btype = first
        while True:
            if btype is None:
                btype = self._f.read(4)
                if not btype:
                    return
            if len(btype) < 4:
                self.error = "truncated block type"
                return
            raw_len = self._f.read(4)
            if len(raw_len) < 4:
                self.error = "truncated block length"
                return
            if btype == _NG_SHB:
                bom = self._f.read(4)
                if bom == b"\x4d\x3c\x2b\x1a":
                    endian = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    endian = ">"
                else:
                    self.error = "bad pcapng byte-order magic"
                    return
                blen = struct.unpack(endian + "I", raw_len)[0]
                if blen < 28 or blen > _MAX_RECORD or blen % 4:
                    self.error = "corrupt section header length " + str(blen)
                    return
                body = self._read_body(blen - 16)
                links = []
            else:
                blen = struct.unpack(endian + "I", raw_len)[0]
                if blen < 12 or blen > _MAX_RECORD + 64 or blen % 4:
                    self.error = "corrupt block length " + str(blen)
                    return
                body = self._read_body(blen - 12)
            if body is None:
                self.error = "truncated block after " + str(self.records) + " records"
                return
            tail = self._f.read(4)
            if len(tail) < 4:
                self.error = "truncated block trailer"
                return
            code = struct.unpack(endian + "I", btype)[0]
            btype = None
            if code == 1 and len(body) >= 8:  # interface description
                lt = struct.unpack(endian + "H", body[0:2])[0]
                links.append((lt, _ts_resolution(body[8:], endian)))
            elif code == 6 and len(body) >= 20:  # enhanced packet
                iface, hi, lo, cap = struct.unpack(endian + "IIII", body[0:16])
                if iface >= len(links) or cap > len(body) - 20:
                    self.skipped_blocks += 1
                    continue
                lt, tps = links[iface]
                self.records += 1
                yield ((hi << 32) | lo) * 1000 // tps, lt, body[20:20 + cap]
            elif code == 3 and len(body) >= 4 and links:  # simple packet: no timestamp
                self.records += 1
                yield 0, links[0][0], body[4:]
            else:
                self.skipped_blocks += 1

    def _read_body(self, n):
        if n < 0:
            return None
        data = self._f.read(n)
        return data if len(data) == n else None


def _ts_resolution(opts, endian):
    # if_tsresol option (code 9): power of 10, or of 2 when the top bit is set.
    off = 0
    while off + 4 <= len(opts):
        code, ln = struct.unpack(endian + "HH", opts[off:off + 4])
        if code == 0:
            break
        if code == 9 and ln >= 1:
            v = opts[off + 4]
            return (1 << (v & 0x7F)) if v & 0x80 else 10 ** v
        off += 4 + ((ln + 3) & ~3)
    return 1000000


def replay(path, agent, speed=0, sleep_ms=None):
    """Feed a capture to `agent` (see agent.Agent.packet); return the Reader.

    speed 0 replays as fast as possible; 1.0 at recorded speed, 10 ten times
    faster.
    """
    if sleep_ms is None:
        sleep_ms = platform.sleep_ms
    try:
        f = open(path, "rb")
    except OSError as e:
        agent.note("source", "cannot open capture " + str(path) + ": errno " + str(e.args[0]))
        return None
    reader = Reader(f)
    try:
        prev = None
        for ts, lt, frame in reader:
            if prev is not None and speed and ts > prev:
                sleep_ms(int((ts - prev) / speed))
            prev = ts
            agent.packet(ts, lt, frame)
    finally:
        f.close()
    if reader.error:
        agent.note("source", str(path) + ": " + reader.error)
    return reader
