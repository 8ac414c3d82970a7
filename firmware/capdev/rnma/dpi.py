# Looks at the first payload bytes of a flow: protocol signatures here, and
# (in dpi_names.py, reached through this module) names from TLS SNI, gQUIC
# SNI and HTTP Host, DNS answers and FTP data-channel announcements.
# Every parser is bounds-checked and returns None/0 on malformed input; the
# caller counts those as "malformed" and carries on. Small membership tests
# are comparisons: a constant tuple is a heap object on a board.
from capdev.platform import const

# Signature bits (flow F_SIGS bitmask).
SIG_TLS = const(1 << 0)
SIG_HTTP = const(1 << 1)
SIG_QUIC = const(1 << 2)
SIG_STUN = const(1 << 3)
SIG_RTP = const(1 << 4)        # weak: needs consistent SSRC over packets
SIG_DTLS = const(1 << 5)
SIG_RAKNET = const(1 << 6)
SIG_BITTORRENT = const(1 << 7)
SIG_DHT = const(1 << 8)
SIG_UTP = const(1 << 9)        # weak
SIG_GNUTELLA = const(1 << 10)
SIG_WIREGUARD = const(1 << 11)
SIG_OPENVPN = const(1 << 12)
SIG_RTMP = const(1 << 13)
SIG_SIP = const(1 << 14)
SIG_TEAMSPEAK = const(1 << 15)
SIG_SSH = const(1 << 16)
SIG_DNS = const(1 << 17)
SIG_TAILSCALE = const(1 << 18)
SIG_HTTP_MEDIA = const(1 << 19)
SIG_HTTP_DOWNLOAD = const(1 << 20)
SIG_DISCORD = const(1 << 21)
SIG_RTP_VIDEO = const(1 << 22)
SIG_FTP = const(1 << 23)
SIG_TLS_CLIENT_HELLO = const(1 << 24)
SIG_RTP_AUDIO = const(1 << 25)

_RAKNET_MAGIC = b"\x00\xff\xff\x00\xfe\xfe\xfe\xfe\xfd\xfd\xfd\xfd\x12\x34\x56\x78"
def _u16(b, i):
    return (b[i] << 8) | b[i + 1]


def signature(p, proto, sport, dport, up):
    """Signature bits a single payload shows (0 when none). `p` is bytes."""
    n = len(p)
    if n == 0:
        return 0
    b0 = p[0]
    sig = 0
    if proto == 6:
        if n >= 6 and b0 == 0x16 and p[1] == 3 and p[2] <= 4:
            sig = SIG_TLS | (SIG_TLS_CLIENT_HELLO if p[5] == 1 else 0)
        elif n >= 6 and (b0 == 0x14 or b0 == 0x15 or b0 == 0x17) and p[1] == 3 and p[2] <= 4:
            sig = SIG_TLS
        elif p.startswith(b"\x13BitTorrent protocol"):
            sig = SIG_BITTORRENT
        elif p.startswith(b"GNUTELLA") or p.startswith(b"GND"):
            sig = SIG_GNUTELLA
        elif p.startswith(b"SSH-"):
            sig = SIG_SSH
        elif _http_start(p):
            sig = SIG_HTTP
        elif b0 == 3 and n >= 1537 and up:
            sig = SIG_RTMP  # C0 version byte + 1536-byte C1
        elif n >= 14 and _u16(p, 0) == n - 2:
            # 2-byte length framing: RTP over TCP (RFC 4571), DNS over TCP, OpenVPN over TCP.
            if (p[2] == 0x80 or p[2] == 0x90) and _rtp_pt_ok(p[3] & 0x7F):
                sig = SIG_RTP | _rtp_kind(p[3] & 0x7F)
            elif p[2] >> 3 in (7, 8, 10) and (sport == 1194 or dport == 1194 or n > 40):
                sig = SIG_OPENVPN
        if n >= 20 and p[4:8] == b"\x21\x12\xa4\x42" and b0 < 2 and _u16(p, 2) + 20 <= n:
            sig |= SIG_STUN  # STUN/TURN over TCP
        if p.startswith(b"SIP/2.0") or b" sip:" in p[:40]:
            sig |= SIG_SIP
        return sig
    if proto != 17:
        return 0
    if n >= 20 and p[4:8] == b"\x21\x12\xa4\x42" and b0 < 2 and _u16(p, 2) + 20 == n:
        return SIG_STUN
    if (n >= 20 and b0 < 2 and _u16(p, 2) + 20 == n and (p[1] == 1 or p[1] == 0x11)
            and (sport == 3478 or sport == 19302 or dport == 3478 or dport == 19302)):
        return SIG_STUN  # classic STUN (RFC 3489), no cookie
    if n >= 13 and 0x14 <= b0 <= 0x17 and p[1] == 0xFE and (p[2] == 0xFF or p[2] == 0xFD):
        return SIG_DTLS
    if n >= 12 and b0 & 0xC0 == 0x80:
        pt = p[1] & 0x7F
        if 72 <= pt <= 76 and p[1] & 0x80:
            return SIG_RTP  # RTCP SR/RR/SDES/BYE/APP (PT 200-204)
        # RTP from an endpoint: no padding, no contributing sources.
        if (b0 == 0x80 or b0 == 0x90) and _rtp_pt_ok(pt):
            return SIG_RTP | _rtp_kind(pt)
    v = 9 if b0 & 0x08 else 1  # gQUIC: version after an optional 8-byte connection id
    if b0 & 0x01 and n >= v + 4 and p[v] == 0x51 and p[v + 1:v + 4] in (
            b"039", b"043", b"046", b"050", b"035", b"036", b"037", b"044", b"038", b"034"):
        return SIG_QUIC
    if n >= 20 and b0 & 0xC0 == 0xC0 and p[1:5] in (b"\x00\x00\x00\x01", b"\x6b\x33\x43\xcf", b"\xff\x00\x00\x1d"):
        return SIG_QUIC  # IETF QUIC long header, v1/v2/draft-29
    if _RAKNET_MAGIC in p[:80]:
        return SIG_RAKNET
    if p.startswith(b"TS3INIT1"):
        return SIG_TEAMSPEAK
    if p.startswith(b"TS\xf0\x9f\x92\xac"):
        return SIG_TAILSCALE
    if 1 <= b0 <= 4 and p[1:4] == b"\x00\x00\x00" and ((b0 == 1 and n == 148) or (b0 == 2 and n == 92)
                                                       or (b0 == 3 and n == 64) or (b0 == 4 and n >= 32 and n % 16 == 0)):
        return SIG_WIREGUARD
    if p.startswith(b"d1:") or p.startswith(b"d2:ip"):
        return SIG_DHT
    if n >= 20 and b0 & 0x0F == 1 and b0 >> 4 <= 4 and p[1] <= 2:
        return SIG_UTP
    if n == 74 and p[0:4] == b"\x00\x01\x00\x46":
        return SIG_DISCORD  # Discord voice IP discovery
    if p.startswith(b"GND") or p.startswith(b"GNUTELLA"):
        return SIG_GNUTELLA
    if p.startswith(b"SIP/2.0") or b" sip:" in p[:40]:
        return SIG_SIP
    if n >= 14 and (sport == 1194 or dport == 1194) and b0 >> 3 in (7, 8, 10):
        return SIG_OPENVPN
    return 0


def _rtp_pt_ok(pt):
    return pt <= 34 or 96 <= pt <= 127


def _rtp_kind(pt):
    # Static payload types 0-23 are audio codecs, 24-34 video (RFC 3551).
    if pt <= 23:
        return SIG_RTP_AUDIO
    if pt <= 34:
        return SIG_RTP_VIDEO
    return 0


def _http_start(p):
    return (p.startswith(b"GET ") or p.startswith(b"POST ") or p.startswith(b"HEAD ")
            or p.startswith(b"PUT ") or p.startswith(b"HTTP/1."))


def rtp_id(p, proto):
    """(SSRC low 15 bits << 16) | sequence number of an RTP packet, or -1."""
    off = 2 if proto == 6 else 0
    if len(p) < off + 12:
        return -1
    return ((((p[off + 10] & 0x7F) << 8) | p[off + 11]) << 16) | (p[off + 2] << 8) | p[off + 3]


def rtp_follows(prev, cur):
    """True when `cur` continues the stream of `prev`: same SSRC, next sequence
    numbers. Random or zero-filled payloads almost never pass twice."""
    if prev < 0 or cur < 0 or prev >> 16 != cur >> 16:
        return False
    d = ((cur & 0xFFFF) - (prev & 0xFFFF)) & 0xFFFF
    return 1 <= d <= 8


def __getattr__(name):
    # http_info, tls_sni, gquic_sni, dns_answers, ftp_data_endpoint, Malformed:
    # loaded from dpi_names.py on first use.
    from capdev.rnma import dpi_names

    return getattr(dpi_names, name)


# Loaded with this module so a monitor's heap does not grow at its first named
# flow; the agent unloads it again between uses (agent.Agent.trim).
__import__("capdev.rnma.dpi_names")
