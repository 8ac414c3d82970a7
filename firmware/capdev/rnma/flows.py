# Bounded flow table. Per-flow state lives in one preallocated int32 array
# (struct-of-arrays) so 64 flows cost a few KiB on a microcontroller instead of
# one object with a dict each. Flows are keyed by a canonical 5-tuple so both
# directions meet in one slot; "up" is the client (initiator) side.
from array import array

from capdev.platform import const

# Field offsets inside a slot.
F_FIRST = const(0)     # ms of the first packet
F_LAST = const(1)      # ms of the last packet
F_PUP = const(2)       # packets client -> server
F_PDN = const(3)
F_BUP = const(4)       # IP bytes client -> server (saturating)
F_BDN = const(5)
F_IAT = const(6)       # sum of inter-arrival times, ms
F_JIT = const(7)       # smoothed |IAT change| x16 (RFC 3550 style)
F_PIAT = const(8)      # previous inter-arrival time
F_SMALL = const(9)     # packets of at most SMALL_LEN bytes
F_LARGE = const(10)    # packets of at least LARGE_LEN bytes
F_MAXLEN = const(11)
F_DSCP = const(12)     # last non-zero DSCP
F_RTT = const(13)      # TCP handshake RTT, ms; -1 unknown
F_HS = const(14)       # handshake timestamps in progress
F_STATE = const(15)    # bits below, protocol number in bits 8..15
F_SIGS = const(16)     # bitmask of payload signatures seen (dpi.SIG_*)
F_AUX = const(17)      # RTP SSRC (low 30 bits) client -> server, for consistency checks
F_WEAK = const(18)     # consistent hits of weak signatures (RTP, uTP)
F_WSTART = const(19)   # 1-second window start, ms
F_WPKTS = const(20)    # packets in the window
F_BULK = const(21)     # ms when the current >bulk_pps run began, 0 = none
F_RUNS = const(22)     # seconds spent above bulk_pps (qosify bulk trigger)
F_PEAK = const(23)     # highest 1-second window rate, kbit/s
F_WBYTES = const(24)
F_HINT = const(25)     # class evidence fixed at creation: (conf << 8) | class+1
F_SAMPLED = const(26)  # total bytes already counted by the report sampler
F_DPI = const(27)      # payload packets inspected
F_CLS = const(28)      # cached classification: (conf << 8) | class+1
F_CLSPK = const(29)    # packet count when F_CLS was computed
F_AUX2 = const(30)     # RTP SSRC of the server -> client direction
F_NAME = const(31)     # what the flow's name said: see classify.name_code()
NFIELDS = const(32)

# F_STATE bits
ST_CLIENT_LOW = const(1)   # the client is the lower endpoint of the key
ST_FIN = const(2)          # FIN or RST seen
ST_SYN_SEEN = const(4)
ST_SYNACK_SEEN = const(8)
ST_NEW = const(16)         # created by this update (cleared by the caller)

SMALL_LEN = const(200)
LARGE_LEN = const(1000)
_SAT = const(0x7FFFFFFF)


def make_key(proto, src, sport, dst, dport):
    """(key bytes, True when src is the lower endpoint)."""
    if src < dst or (src == dst and sport <= dport):
        return bytes((proto,)) + src + bytes((sport >> 8, sport & 255)) + dst + bytes((dport >> 8, dport & 255)), True
    return bytes((proto,)) + dst + bytes((dport >> 8, dport & 255)) + src + bytes((sport >> 8, sport & 255)), False


def split_key(key):
    """(proto, addr_a, port_a, addr_b, port_b) of a key."""
    n = (len(key) - 5) // 2
    a = key[1:1 + n]
    b = key[3 + n:3 + 2 * n]
    return key[0], a, (key[1 + n] << 8) | key[2 + n], b, (key[3 + 2 * n] << 8) | key[4 + 2 * n]


class FlowTable:
    """At most `size` flows; a new flow evicts an idle one, else the least recent.

    `on_evict(table, slot)` is called before a slot is reused so the owner can
    account the flow (its class, its bytes) first.
    """

    def __init__(self, size=64, idle_ms=120000, on_evict=None, keep_names=False):
        if size < 1:
            raise ValueError("flow table size must be at least 1")
        self.size = size
        self.idle_ms = idle_ms
        self.on_evict = on_evict
        self.a = array("i", bytes(4 * NFIELDS * size))
        self.index = {}
        self.keys = [None] * size
        # Name strings cost ~64 bytes each on a board; only hosts keep them.
        self.names = [None] * size if keep_names else None
        self.free = list(range(size - 1, -1, -1))
        self.evicted = 0
        self.evicted_idle = 0

    def __len__(self):
        return len(self.index)

    def slots(self):
        return list(self.index.values())

    def get(self, slot, field):
        return self.a[slot * NFIELDS + field]

    def lookup(self, proto, src, sport, dst, dport, now):
        """Slot of the flow, creating it (and maybe evicting) when new; and whether
        the packet goes client -> server."""
        key, src_low = make_key(proto, src, sport, dst, dport)
        slot = self.index.get(key)
        if slot is not None:
            st = self.a[slot * NFIELDS + F_STATE]
            return slot, bool(st & ST_CLIENT_LOW) == src_low
        slot = self.free.pop() if self.free else self._evict(now)
        self.index[key] = slot
        self.keys[slot] = key
        if self.names is not None:
            self.names[slot] = None
        a = self.a
        base = slot * NFIELDS
        for i in range(base, base + NFIELDS):
            a[i] = 0
        a[base + F_FIRST] = now
        a[base + F_LAST] = now
        a[base + F_WSTART] = now
        a[base + F_RTT] = -1
        a[base + F_AUX] = -1
        a[base + F_AUX2] = -1
        a[base + F_STATE] = ((proto & 255) << 8) | ST_NEW | (ST_CLIENT_LOW if src_low else 0)
        return slot, True

    def _evict(self, now):
        a = self.a
        victim = -1
        oldest = None
        for key in self.index:
            s = self.index[key]
            last = a[s * NFIELDS + F_LAST]
            if now - last >= self.idle_ms or a[s * NFIELDS + F_STATE] & ST_FIN:
                victim = s
                self.evicted_idle += 1
                break
            if oldest is None or last < oldest:
                oldest, victim = last, s
        self.evicted += 1
        self.drop(victim)
        return self.free.pop()

    def drop(self, slot):
        if self.on_evict is not None:
            self.on_evict(self, slot)
        key = self.keys[slot]
        if key is not None:
            del self.index[key]
        self.keys[slot] = None
        if self.names is not None:
            self.names[slot] = None
        self.free.append(slot)

    def expire(self, now):
        """Drop flows idle for idle_ms (or closed and quiet for a second)."""
        a = self.a
        gone = []
        for key in self.index:
            s = self.index[key]
            quiet = now - a[s * NFIELDS + F_LAST]
            if quiet >= self.idle_ms or (quiet >= 1000 and a[s * NFIELDS + F_STATE] & ST_FIN):
                gone.append(s)
        for s in gone:
            self.drop(s)
        return len(gone)

    def shift(self, d):
        """Move every stored time back by d ms (the owner's clock origin moved)."""
        a = self.a
        for slot in self.index.values():
            b = slot * NFIELDS
            for f in (F_FIRST, F_LAST, F_WSTART, F_HS):
                a[b + f] -= d

    def account(self, slot, up, length, now, dscp):
        """Count one packet of `length` IP bytes; update rate, size and timing shape."""
        a = self.a
        b = slot * NFIELDS
        if up:
            a[b + F_PUP] += 1
            v = a[b + F_BUP] + length
            a[b + F_BUP] = v if v < _SAT else _SAT
        else:
            a[b + F_PDN] += 1
            v = a[b + F_BDN] + length
            a[b + F_BDN] = v if v < _SAT else _SAT
        if a[b + F_PUP] + a[b + F_PDN] > 1:
            iat = now - a[b + F_LAST]
            if iat < 0:
                iat = 0
            a[b + F_IAT] = min(a[b + F_IAT] + iat, _SAT)
            d = iat - a[b + F_PIAT]
            if d < 0:
                d = -d
            # J += (|D| - J) / 16, kept x16 to stay in integers.
            a[b + F_JIT] += d - ((a[b + F_JIT] + 8) >> 4)
            a[b + F_PIAT] = iat
        a[b + F_LAST] = now
        if length <= SMALL_LEN:
            a[b + F_SMALL] += 1
        elif length >= LARGE_LEN:
            a[b + F_LARGE] += 1
        if length > a[b + F_MAXLEN]:
            a[b + F_MAXLEN] = length
        if dscp:
            a[b + F_DSCP] = dscp
        # 1-second windows: peak rate, and how long the flow stays above
        # the bulk packet rate (qosify's bulk trigger).
        if now - a[b + F_WSTART] >= 1000:
            self._close_window(b, now)
        a[b + F_WPKTS] += 1
        a[b + F_WBYTES] = min(a[b + F_WBYTES] + length, _SAT)

    bulk_pps = 100

    def account_bulk(self, slot, up, pkts, nbytes, now):
        """Count packets known only as totals (conntrack, socket accounting)."""
        if pkts <= 0:
            return
        a = self.a
        b = slot * NFIELDS
        f = F_PUP if up else F_PDN
        a[b + f] += pkts
        v = a[b + f + 2] + nbytes
        a[b + f + 2] = v if v < _SAT else _SAT
        mean = nbytes // pkts
        if mean <= SMALL_LEN:
            a[b + F_SMALL] += pkts
        elif mean >= LARGE_LEN:
            a[b + F_LARGE] += pkts
        if mean > a[b + F_MAXLEN]:
            a[b + F_MAXLEN] = mean
        if now - a[b + F_WSTART] >= 1000:
            self._close_window(b, now)
        a[b + F_WPKTS] += pkts
        a[b + F_WBYTES] = min(a[b + F_WBYTES] + nbytes, _SAT)
        a[b + F_LAST] = now

    def _close_window(self, b, now):
        a = self.a
        span = now - a[b + F_WSTART]
        kbps = a[b + F_WBYTES] * 8 // span  # bytes*8/ms == kbit/s
        if span <= 2000:
            if kbps > a[b + F_PEAK]:
                a[b + F_PEAK] = kbps
            if a[b + F_WPKTS] * 1000 // span >= self.bulk_pps:
                a[b + F_RUNS] += 1
            else:
                a[b + F_RUNS] = 0
        else:
            a[b + F_RUNS] = 0
        a[b + F_WSTART] = now
        a[b + F_WPKTS] = 0
        a[b + F_WBYTES] = 0

    def tcp_handshake(self, slot, up, flags, now):
        """TCP RTT seen from the capture point: (SYN -> SYN/ACK) + (SYN/ACK -> ACK)."""
        a = self.a
        b = slot * NFIELDS
        st = a[b + F_STATE]
        if flags & 0x05:
            a[b + F_STATE] = st | ST_FIN
            return
        if flags & 0x12 == 0x02:
            a[b + F_HS] = now
            a[b + F_STATE] = st | ST_SYN_SEEN
        elif flags & 0x12 == 0x12:
            if st & ST_SYN_SEEN and not st & ST_SYNACK_SEEN:
                a[b + F_RTT] = -2 - (now - a[b + F_HS])  # half done, negative marks it
            a[b + F_HS] = now
            a[b + F_STATE] = st | ST_SYNACK_SEEN
        elif flags & 0x10 and st & ST_SYNACK_SEEN and a[b + F_RTT] < -1:
            a[b + F_RTT] = (-2 - a[b + F_RTT]) + (now - a[b + F_HS])

    def stats(self, slot):
        """The flow as a dict (for reports, tests and the host CLI)."""
        a = self.a
        b = slot * NFIELDS
        proto, la, lp, ha, hp = split_key(self.keys[slot])
        if a[b + F_STATE] & ST_CLIENT_LOW:
            ca, cp, sa, sp = la, lp, ha, hp
        else:
            ca, cp, sa, sp = ha, hp, la, lp
        pk = a[b + F_PUP] + a[b + F_PDN]
        by = a[b + F_BUP] + a[b + F_BDN]
        dur = a[b + F_LAST] - a[b + F_FIRST]
        rtt = a[b + F_RTT]
        return {
            "proto": proto, "client": ca, "cport": cp, "server": sa, "sport": sp,
            "pkts_up": a[b + F_PUP], "pkts_down": a[b + F_PDN],
            "bytes_up": a[b + F_BUP], "bytes_down": a[b + F_BDN],
            "dur_ms": dur, "mean_len": by // pk if pk else 0,
            "iat_ms": a[b + F_IAT] // (pk - 1) if pk > 1 else 0,
            "jitter_ms": a[b + F_JIT] >> 4, "peak_kbps": a[b + F_PEAK],
            "dscp": a[b + F_DSCP], "rtt_ms": rtt if rtt >= 0 else None,
            "name": self.names[slot] if self.names is not None else None,
        }
