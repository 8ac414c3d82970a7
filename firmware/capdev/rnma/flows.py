# Bounded flow table. Per-flow state lives in one int32 array (struct-of-arrays)
# so 64 flows cost 8 KiB on a microcontroller instead of one object with a dict
# each. The array starts with room for a few flows and doubles as flows come,
# up to the bound: a device with two flows pays for four, not sixty-four. Flows are keyed by a canonical 5-tuple so both
# directions meet in one slot; "up" is the client (initiator) side.
from array import array

from capdev.platform import const

# Field offsets inside a slot.
_F_FIRST = const(0)     # ms of the first packet
_F_LAST = const(1)      # ms of the last packet
_F_PUP = const(2)       # packets client -> server
_F_PDN = const(3)
_F_BUP = const(4)       # IP bytes client -> server (saturating)
_F_BDN = const(5)
_F_IAT = const(6)       # sum of inter-arrival times, ms
_F_JIT = const(7)       # smoothed |IAT change| x16 (RFC 3550 style)
_F_PIAT = const(8)      # previous inter-arrival time
_F_SMALL = const(9)     # packets of at most _SMALL_LEN bytes
_F_LARGE = const(10)    # packets of at least _LARGE_LEN bytes
_F_MAXLEN = const(11)
_F_DSCP = const(12)     # last non-zero DSCP
_F_RTT = const(13)      # TCP handshake RTT, ms; -1 unknown
_F_HS = const(14)       # handshake timestamps in progress
_F_STATE = const(15)    # bits below, protocol number in bits 8..15
_F_SIGS = const(16)     # bitmask of payload signatures seen (dpi.SIG_*)
_F_AUX = const(17)      # RTP SSRC (low 30 bits) client -> server, for consistency checks
_F_WEAK = const(18)     # consistent hits of weak signatures (RTP, uTP)
_F_WSTART = const(19)   # 1-second window start, ms
_F_WPKTS = const(20)    # packets in the window
_F_BULK = const(21)     # ms when the current >bulk_pps run began, 0 = none
_F_RUNS = const(22)     # seconds spent above bulk_pps (qosify bulk trigger)
_F_PEAK = const(23)     # highest 1-second window rate, kbit/s
_F_WBYTES = const(24)
_F_HINT = const(25)     # class evidence fixed at creation: (conf << 8) | class+1
_F_SAMPLED = const(26)  # total bytes already counted by the report sampler
_F_DPI = const(27)      # payload packets inspected
_F_CLS = const(28)      # cached classification: (conf << 8) | class+1
_F_CLSPK = const(29)    # packet count when _F_CLS was computed
_F_AUX2 = const(30)     # RTP SSRC of the server -> client direction
_F_NAME = const(31)     # what the flow's name said: see classify.name_code()
_NFIELDS = const(32)

# _F_STATE bits
_ST_CLIENT_LOW = const(1)   # the client is the lower endpoint of the key
_ST_FIN = const(2)          # FIN or RST seen
_ST_SYN_SEEN = const(4)
_ST_SYNACK_SEEN = const(8)
_ST_NEW = const(16)         # created by this update (cleared by the caller)

_FIRST_SLOTS = const(4)  # room the table starts with (0.5 KiB); it doubles up to `size`

_SMALL_LEN = const(200)
_LARGE_LEN = const(1000)
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
    Room for them (``slots_allocated``) grows by doubling as they come.

    `on_evict(table, slot)` is called before a slot is reused so the owner can
    account the flow (its class, its bytes) first.
    """

    def __init__(self, size=64, idle_ms=120000, on_evict=None, keep_names=False):
        if size < 1:
            raise ValueError("flow table size must be at least 1")
        self.size = size
        self.idle_ms = idle_ms
        self.on_evict = on_evict
        room = size if size < _FIRST_SLOTS else _FIRST_SLOTS
        self.slots_allocated = room
        self.a = array("i", bytes(4 * _NFIELDS * room))
        self.index = {}
        self.keys = [None] * room
        # Name strings cost ~64 bytes each on a board; only hosts keep them.
        self.names = [None] * room if keep_names else None
        self.evicted = 0
        self.evicted_idle = 0

    def __len__(self):
        return len(self.index)

    def slots(self):
        return list(self.index.values())

    def get(self, slot, field):
        return self.a[slot * _NFIELDS + field]

    def lookup(self, proto, src, sport, dst, dport, now):
        """Slot of the flow, creating it (and maybe evicting) when new; and whether
        the packet goes client -> server."""
        key, src_low = make_key(proto, src, sport, dst, dport)
        slot = self.index.get(key)
        if slot is not None:
            st = self.a[slot * _NFIELDS + _F_STATE]
            return slot, bool(st & _ST_CLIENT_LOW) == src_low
        used = len(self.index)
        if used < self.slots_allocated:
            slot = self._empty_slot()
        elif used < self.size and self._grow():
            slot = used  # the first of the new slots
        else:
            slot = self._evict(now)
        self.index[key] = slot
        self.keys[slot] = key
        if self.names is not None:
            self.names[slot] = None
        a = self.a
        base = slot * _NFIELDS
        for i in range(base, base + _NFIELDS):
            a[i] = 0
        a[base + _F_FIRST] = now
        a[base + _F_LAST] = now
        a[base + _F_WSTART] = now
        a[base + _F_RTT] = -1
        a[base + _F_AUX] = -1
        a[base + _F_AUX2] = -1
        a[base + _F_STATE] = ((proto & 255) << 8) | _ST_NEW | (_ST_CLIENT_LOW if src_low else 0)
        return slot, True

    def _evict(self, now):
        a = self.a
        victim = -1
        oldest = None
        for key in self.index:
            s = self.index[key]
            last = a[s * _NFIELDS + _F_LAST]
            if now - last >= self.idle_ms or a[s * _NFIELDS + _F_STATE] & _ST_FIN:
                victim = s
                self.evicted_idle += 1
                break
            if oldest is None or last < oldest:
                oldest, victim = last, s
        self.evicted += 1
        self.drop(victim)
        return victim

    def _empty_slot(self):
        # A slot is empty when it holds no key. Scanning for one costs less
        # heap than a list of free slots (~0.5 KiB at 64 flows) and runs
        # only when a flow is new.
        keys = self.keys
        for slot in range(self.slots_allocated):
            if keys[slot] is None:
                return slot
        raise RuntimeError("flow table index and slots disagree")

    def _grow(self):
        """Double the room for flows (up to ``size``); False when the heap
        cannot give it, and the caller evicts instead. Extended in place, so
        references to ``a`` held elsewhere stay valid."""
        add = self.slots_allocated
        if add > self.size - self.slots_allocated:
            add = self.size - self.slots_allocated
        try:
            self.a.extend(array("i", bytes(4 * _NFIELDS * add)))
            self.keys.extend([None] * add)
            if self.names is not None:
                self.names.extend([None] * add)
        except MemoryError:
            # A partial extension is harmless: only whole slots below the
            # shortest of the three are ever used.
            return False
        self.slots_allocated += add
        return True

    def drop(self, slot):
        if self.on_evict is not None:
            self.on_evict(self, slot)
        key = self.keys[slot]
        if key is not None:
            del self.index[key]
        self.keys[slot] = None
        if self.names is not None:
            self.names[slot] = None

    def expire(self, now):
        """Drop flows idle for idle_ms (or closed and quiet for a second)."""
        a = self.a
        gone = []
        for key in self.index:
            s = self.index[key]
            quiet = now - a[s * _NFIELDS + _F_LAST]
            if quiet >= self.idle_ms or (quiet >= 1000 and a[s * _NFIELDS + _F_STATE] & _ST_FIN):
                gone.append(s)
        for s in gone:
            self.drop(s)
        return len(gone)

    def shift(self, d):
        """Move every stored time back by d ms (the owner's clock origin moved)."""
        a = self.a
        for slot in self.index.values():
            b = slot * _NFIELDS
            a[b + _F_FIRST] -= d
            a[b + _F_LAST] -= d
            a[b + _F_WSTART] -= d
            a[b + _F_HS] -= d

    def account(self, slot, up, length, now, dscp):
        """Count one packet of `length` IP bytes; update rate, size and timing shape."""
        a = self.a
        b = slot * _NFIELDS
        if up:
            a[b + _F_PUP] += 1
            v = a[b + _F_BUP] + length
            a[b + _F_BUP] = v if v < _SAT else _SAT
        else:
            a[b + _F_PDN] += 1
            v = a[b + _F_BDN] + length
            a[b + _F_BDN] = v if v < _SAT else _SAT
        if a[b + _F_PUP] + a[b + _F_PDN] > 1:
            iat = now - a[b + _F_LAST]
            if iat < 0:
                iat = 0
            a[b + _F_IAT] = min(a[b + _F_IAT] + iat, _SAT)
            d = iat - a[b + _F_PIAT]
            if d < 0:
                d = -d
            # J += (|D| - J) / 16, kept x16 to stay in integers.
            a[b + _F_JIT] += d - ((a[b + _F_JIT] + 8) >> 4)
            a[b + _F_PIAT] = iat
        a[b + _F_LAST] = now
        if length <= _SMALL_LEN:
            a[b + _F_SMALL] += 1
        elif length >= _LARGE_LEN:
            a[b + _F_LARGE] += 1
        if length > a[b + _F_MAXLEN]:
            a[b + _F_MAXLEN] = length
        if dscp:
            a[b + _F_DSCP] = dscp
        # 1-second windows: peak rate, and how long the flow stays above
        # the bulk packet rate (qosify's bulk trigger). linux.account_bulk
        # counts conntrack totals the same way.
        if now - a[b + _F_WSTART] >= 1000:
            self._close_window(b, now)
        a[b + _F_WPKTS] += 1
        a[b + _F_WBYTES] = min(a[b + _F_WBYTES] + length, _SAT)

    bulk_pps = 100

    def _close_window(self, b, now):
        a = self.a
        span = now - a[b + _F_WSTART]
        kbps = a[b + _F_WBYTES] * 8 // span  # bytes*8/ms == kbit/s
        if span <= 2000:
            if kbps > a[b + _F_PEAK]:
                a[b + _F_PEAK] = kbps
            if a[b + _F_WPKTS] * 1000 // span >= self.bulk_pps:
                a[b + _F_RUNS] += 1
            else:
                a[b + _F_RUNS] = 0
        else:
            a[b + _F_RUNS] = 0
        a[b + _F_WSTART] = now
        a[b + _F_WPKTS] = 0
        a[b + _F_WBYTES] = 0

    def tcp_handshake(self, slot, up, flags, now):
        """TCP RTT seen from the capture point: (SYN -> SYN/ACK) + (SYN/ACK -> ACK)."""
        a = self.a
        b = slot * _NFIELDS
        st = a[b + _F_STATE]
        if flags & 0x05:
            a[b + _F_STATE] = st | _ST_FIN
            return
        if flags & 0x12 == 0x02:
            a[b + _F_HS] = now
            a[b + _F_STATE] = st | _ST_SYN_SEEN
        elif flags & 0x12 == 0x12:
            if st & _ST_SYN_SEEN and not st & _ST_SYNACK_SEEN:
                a[b + _F_RTT] = -2 - (now - a[b + _F_HS])  # half done, negative marks it
            a[b + _F_HS] = now
            a[b + _F_STATE] = st | _ST_SYNACK_SEEN
        elif flags & 0x10 and st & _ST_SYNACK_SEEN and a[b + _F_RTT] < -1:
            a[b + _F_RTT] = (-2 - a[b + _F_RTT]) + (now - a[b + _F_HS])
