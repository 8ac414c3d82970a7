# Link, network and transport decoding without copies: frames in, one tuple out.
# parse() returns (proto, src, sport, dst, dport, ip_len, dscp, tcp_flags,
# payload memoryview, frag) or a short reason string for a frame it skips.
# Membership tests are written as comparisons: a constant tuple is a heap
# object on a board, a comparison stays in flash.
from capdev.platform import const

TCP = const(6)
UDP = const(17)
ESP = const(50)
GRE = const(47)

# tcp_flags bits (as on the wire)
FIN = const(0x01)
SYN = const(0x02)
RST = const(0x04)
ACK = const(0x10)

GTP_U_PORT = const(2152)

ETH = const(1)
NULL = const(0)
RAW = const(101)
PPP = const(9)
CHDLC = const(104)
SLL = const(113)
SLL2 = const(276)
RAW4 = const(228)
RAW6 = const(229)
LOOP = const(108)

# Why a frame is skipped: line n of _SKIPS for number n (_skip()). One
# string constant: as separate strings they were a heap object each on a
# board.
_S_ETH = const(0)
_S_SLL = const(1)
_S_SLL2 = const(2)
_S_RAW = const(3)
_S_LOOP = const(4)
_S_PPP = const(5)
_S_LINK = const(6)
_S_NON_IP = const(7)
_S_IPV4 = const(8)
_S_IPV4_LENGTH = const(9)
_S_FRAGMENT = const(10)
_S_IPV6 = const(11)
_S_IPV6_EXT = const(12)
_S_TCP = const(13)
_S_TCP_LENGTH = const(14)
_S_UDP = const(15)
_SKIPS = (
    "truncated ethernet header\n"
    "truncated linux-cooked header\n"
    "truncated linux-cooked-v2 header\n"
    "empty raw IP frame\n"
    "truncated loopback header\n"
    "truncated PPP/HDLC header\n"
    "unknown link type \n"
    "non-IP frame\n"
    "truncated or bad IPv4 header\n"
    "bad IPv4 header length\n"
    "IP fragment (not first)\n"
    "truncated or bad IPv6 header\n"
    "truncated IPv6 extension header\n"
    "truncated TCP header\n"
    "bad TCP header length\n"
    "truncated UDP header"
)


# One copy of this small helper per module that keeps a text table, on
# purpose: a shared module for it cost 2 KiB of steady heap (performance.md).
def _skip(n):
    """The reason string for skip number ``n`` (an _S_ number)."""
    return _SKIPS.split("\n")[n]


def _ethertype_at(frame, off, end):
    # Ethertype at `off`, stepping over VLAN/QinQ tags; returns (type, next offset).
    et = (frame[off] << 8) | frame[off + 1]
    off += 2
    while (et == 0x8100 or et == 0x88A8 or et == 0x9100) and off + 4 <= end:
        et = (frame[off + 2] << 8) | frame[off + 3]
        off += 4
    if et == 0x8864 and off + 8 <= end:  # PPPoE session: PPP protocol after 6 bytes
        ppp = (frame[off + 6] << 8) | frame[off + 7]
        et = 0x0800 if ppp == 0x21 else (0x86DD if ppp == 0x57 else ppp)
        off += 8
    return et, off


def parse(linktype, frame):
    end = len(frame)
    mv = memoryview(frame)
    if linktype == ETH:
        if end < 14:
            return _skip(_S_ETH)
        et, off = _ethertype_at(frame, 12, end)
    elif linktype == SLL:
        if end < 16:
            return _skip(_S_SLL)
        et, off = _ethertype_at(frame, 14, end)
    elif linktype == SLL2:
        if end < 20:
            return _skip(_S_SLL2)
        et, off = (frame[0] << 8) | frame[1], 20
    elif linktype == RAW or linktype == RAW4 or linktype == RAW6 or linktype == 12 or linktype == 14:
        if end < 1:
            return _skip(_S_RAW)
        et, off = (0x0800 if frame[0] >> 4 == 4 else 0x86DD), 0
    elif linktype == NULL or linktype == LOOP:
        if end < 4:
            return _skip(_S_LOOP)
        fam = frame[0] | frame[3]  # host order differs between writers
        et, off = (0x0800 if fam == 2 else 0x86DD), 4
    elif linktype == PPP or linktype == CHDLC:
        if end < 4:
            return _skip(_S_PPP)
        if frame[0] == 0x0F or frame[0] == 0x8F:  # Cisco HDLC carries an ethertype
            et, off = (frame[2] << 8) | frame[3], 4
        else:
            off = 2 if frame[0] == 0xFF and frame[1] == 0x03 else 0
            ppp = (frame[off] << 8) | frame[off + 1]
            et, off = (0x0800 if ppp == 0x21 else (0x86DD if ppp == 0x57 else ppp)), off + 2
    else:
        return _skip(_S_LINK) + str(linktype)
    if et == 0x0800:
        return _ipv4(frame, mv, off, end, 0)
    if et == 0x86DD:
        return _ipv6(frame, mv, off, end, 0)
    return _skip(_S_NON_IP)


def _ipv4(frame, mv, off, end, depth):
    if off + 20 > end or frame[off] >> 4 != 4:
        return _skip(_S_IPV4)
    ihl = (frame[off] & 15) * 4
    total = (frame[off + 2] << 8) | frame[off + 3]
    if ihl < 20 or total < ihl:
        return _skip(_S_IPV4_LENGTH)
    ip_end = off + total
    if ip_end > end:
        ip_end = end  # snapped capture: account the wire length, read what exists
    fr = ((frame[off + 6] & 0x1F) << 8) | frame[off + 7]
    if fr:
        return _skip(_S_FRAGMENT)
    frag = 1 if frame[off + 6] & 0x20 else 0
    return _l4(frame, mv, frame[off + 9], bytes(mv[off + 12:off + 16]), bytes(mv[off + 16:off + 20]),
               off + ihl, ip_end, total, frame[off + 1] >> 2, frag, depth)


def _ipv6(frame, mv, off, end, depth):
    if off + 40 > end or frame[off] >> 4 != 6:
        return _skip(_S_IPV6)
    dscp = ((frame[off] & 15) << 2) | (frame[off + 1] >> 6)
    total = 40 + ((frame[off + 4] << 8) | frame[off + 5])
    nh = frame[off + 6]
    src = bytes(mv[off + 8:off + 24])
    dst = bytes(mv[off + 24:off + 40])
    ip_end = min(off + total, end)
    p = off + 40
    frag = 0
    while nh == 0 or nh == 43 or nh == 44 or nh == 60 or nh == 51:
        if p + 8 > ip_end:
            return _skip(_S_IPV6_EXT)
        if nh == 44:
            if ((frame[p + 2] << 8) | frame[p + 3]) & 0xFFF8:
                return _skip(_S_FRAGMENT)
            frag = 1
            ln = 8
        elif nh == 51:
            ln = (frame[p + 1] + 2) * 4
        else:
            ln = (frame[p + 1] + 1) * 8
        nh = frame[p]
        p += ln
    return _l4(frame, mv, nh, src, dst, p, ip_end, total, dscp, frag, depth)


def _l4(frame, mv, proto, src, dst, p, ip_end, total, dscp, frag, depth):
    if proto == TCP:
        if p + 20 > ip_end:
            return _skip(_S_TCP)
        doff = (frame[p + 12] >> 4) * 4
        if doff < 20:
            return _skip(_S_TCP_LENGTH)
        sport = (frame[p] << 8) | frame[p + 1]
        dport = (frame[p + 2] << 8) | frame[p + 3]
        return (proto, src, sport, dst, dport, total, dscp, frame[p + 13],
                mv[min(p + doff, ip_end):ip_end], frag)
    if proto == UDP:
        if p + 8 > ip_end:
            return _skip(_S_UDP)
        sport = (frame[p] << 8) | frame[p + 1]
        dport = (frame[p + 2] << 8) | frame[p + 3]
        if (sport == GTP_U_PORT or dport == GTP_U_PORT) and depth == 0 and not frag:
            inner = _gtp(frame, mv, p + 8, ip_end)
            if inner is not None:
                return inner
        return (proto, src, sport, dst, dport, total, dscp, 0, mv[p + 8:ip_end], frag)
    # ICMP, ESP, GRE, routing protocols...: a flow per address pair and protocol.
    return (proto, src, 0, dst, 0, total, dscp, 0, mv[p:ip_end], frag)


def _gtp(frame, mv, p, end):
    # GTP-U T-PDU (mobile core captures): the user's packet is inside.
    if p + 8 > end or frame[p] >> 5 != 1 or frame[p + 1] != 0xFF:
        return None
    q = p + 8
    if frame[p] & 0x07:
        q += 4
        nxt = frame[q - 1]
        while nxt and q < end:
            ln = frame[q] * 4
            if ln == 0 or q + ln > end:
                return None
            nxt = frame[q + ln - 1]
            q += ln
    if q >= end:
        return None
    v = frame[q] >> 4
    if v == 4:
        return _ipv4(frame, mv, q, end, 1)
    if v == 6:
        return _ipv6(frame, mv, q, end, 1)
    return None
