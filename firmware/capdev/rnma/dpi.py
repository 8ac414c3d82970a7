# Looks at the first payload bytes of a flow: protocol signatures, names (TLS
# SNI, gQUIC SNI, HTTP Host), DNS answers and FTP data-channel announcements.
# Every parser is bounds-checked and returns None/0 on malformed input; the
# caller counts those as "malformed" and carries on.
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

SIG_NAMES = (
    "tls", "http", "quic", "stun", "rtp", "dtls", "raknet", "bittorrent", "dht", "utp",
    "gnutella", "wireguard", "openvpn", "rtmp", "sip", "teamspeak", "ssh", "dns",
    "tailscale", "http-media", "http-download", "discord", "rtp-video", "ftp", "tls-hello",
    "rtp-audio",
)

_RAKNET_MAGIC = b"\x00\xff\xff\x00\xfe\xfe\xfe\xfe\xfd\xfd\xfd\xfd\x12\x34\x56\x78"
_MEDIA_PATH = (".m3u8", ".mpd", ".m4s", ".m4v", ".m4a", ".mp4", ".webm", ".ts?", "videoplayback",
               "/hls/", "/dash/", "/livesim/", "manifest", "chunk", "segment", ".aac", ".mp3")
_DOWNLOAD_PATH = (".exe", ".msi", ".msu", ".cab", ".zip", ".iso", ".img", ".dmg", ".pkg", ".deb",
                  ".rpm", ".apk", ".tar", ".gz", ".7z", ".bin", ".psf", "/msdownload/",
                  "delivery.mp.microsoft", "windowsupdate", "/download")
_MEDIA_TYPES = (b"video/", b"audio/", b"application/dash+xml", b"mpegurl", b"application/vnd.ms-sstr")
_DOWNLOAD_TYPES = (b"application/octet-stream", b"application/x-msdownload", b"application/zip",
                   b"application/x-dosexec", b"application/vnd.microsoft", b"application/x-iso",
                   b"application/x-debian", b"application/vnd.android")
_VIDEO_RTP_PT = (26, 31, 32, 33, 34)


class Malformed(Exception):
    pass


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
        elif n >= 6 and b0 in (0x14, 0x15, 0x17) and p[1] == 3 and p[2] <= 4:
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
            if p[2] in (0x80, 0x90) and _rtp_pt_ok(p[3] & 0x7F):
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
    if (n >= 20 and b0 < 2 and _u16(p, 2) + 20 == n and p[1] in (1, 0x11)
            and (sport in (3478, 19302) or dport in (3478, 19302))):
        return SIG_STUN  # classic STUN (RFC 3489), no cookie
    if n >= 13 and b0 in (0x14, 0x15, 0x16, 0x17) and p[1] == 0xFE and p[2] in (0xFF, 0xFD):
        return SIG_DTLS
    if n >= 12 and b0 & 0xC0 == 0x80:
        pt = p[1] & 0x7F
        if 72 <= pt <= 76 and p[1] & 0x80:
            return SIG_RTP  # RTCP SR/RR/SDES/BYE/APP (PT 200-204)
        # RTP from an endpoint: no padding, no contributing sources.
        if b0 in (0x80, 0x90) and _rtp_pt_ok(pt):
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


def http_info(p):
    """(host or None, extra signature bits) from an HTTP request or response head."""
    head = p[:1024]
    sig = 0
    host = None
    if head.startswith(b"HTTP/1."):
        low = head.lower()
        i = low.find(b"\r\ncontent-type:")
        if i >= 0:
            ct = low[i + 15:i + 80]
            for t in _MEDIA_TYPES:
                if t in ct:
                    sig = SIG_HTTP_MEDIA
            for t in _DOWNLOAD_TYPES:
                if t in ct:
                    sig = SIG_HTTP_DOWNLOAD
        i = low.find(b"\r\ncontent-length:")
        if i >= 0:
            j = low.find(b"\r\n", i + 17)
            try:
                if int(low[i + 17:j].strip()) >= 4000000:
                    sig |= SIG_HTTP_DOWNLOAD
            except ValueError:
                pass
        return None, sig
    sp = head.find(b" ")
    ep = head.find(b" ", sp + 1)
    if sp < 0 or ep < 0:
        return None, 0
    path = head[sp + 1:ep].lower()
    try:
        path = path.decode()
    except UnicodeError:
        path = ""
    for t in _MEDIA_PATH:
        if t in path:
            sig = SIG_HTTP_MEDIA
            break
    for t in _DOWNLOAD_PATH:
        if t in path:
            sig = SIG_HTTP_DOWNLOAD
            break
    low = head.lower()
    i = low.find(b"\r\nhost:")
    if i >= 0:
        j = low.find(b"\r\n", i + 7)
        h = low[i + 7:j if j > 0 else len(low)].strip()
        c = h.find(b":")
        if c > 0:
            h = h[:c]
        host = _text(h)
    return host, sig


def _text(b):
    if not b or len(b) > 253:
        return None
    try:
        s = b.decode()
    except UnicodeError:
        return None
    for ch in s:
        if not (ch.isalpha() or ch.isdigit() or ch in "-._"):
            return None
    return s.lower()


def tls_sni(p):
    """SNI host name from a TLS ClientHello, None when absent; raises Malformed."""
    n = len(p)
    if n < 43 or p[0] != 0x16 or p[5] != 1:
        raise Malformed("not a ClientHello")
    i = 43  # record(5) + handshake(4) + version(2) + random(32)
    i += 1 + p[i] if i < n else 0             # session id
    if i + 2 > n:
        raise Malformed("ClientHello truncated in session id")
    i += 2 + _u16(p, i)                       # cipher suites
    if i + 1 > n:
        raise Malformed("ClientHello truncated in cipher suites")
    i += 1 + p[i]                             # compression methods
    if i + 2 > n:
        return None                           # no extensions, or split over segments
    end = min(n, i + 2 + _u16(p, i))
    i += 2
    while i + 4 <= end:
        et = _u16(p, i)
        el = _u16(p, i + 2)
        i += 4
        if et == 0:
            if i + 5 > end or i + el > end:
                return None  # SNI split over TCP segments
            ln = _u16(p, i + 3)
            if p[i + 2] != 0 or i + 5 + ln > end:
                raise Malformed("bad server_name extension")
            return _text(p[i + 5:i + 5 + ln])
        i += el
    return None


def gquic_sni(p):
    """SNI from a Google QUIC CHLO (tags in clear text), or None."""
    i = p.find(b"CHLO")
    if i < 0 or i + 8 > len(p):
        return None
    count = p[i + 4] | (p[i + 5] << 8)
    tab = i + 8
    vals = tab + 8 * count
    if count > 64 or vals > len(p):
        raise Malformed("gQUIC CHLO tag table out of bounds")
    start = 0
    for k in range(count):
        t = tab + 8 * k
        end = p[t + 4] | (p[t + 5] << 8) | (p[t + 6] << 16)
        if p[t:t + 4] == b"SNI\x00":
            if vals + end > len(p) or end < start:
                raise Malformed("gQUIC SNI out of bounds")
            return _text(p[vals + start:vals + end])
        start = end
    return None


def _skip_name(p, i):
    n = len(p)
    while True:
        if i >= n:
            raise Malformed("DNS name runs past the message")
        ln = p[i]
        if ln == 0:
            return i + 1
        if ln & 0xC0 == 0xC0:
            return i + 2
        if ln & 0xC0:
            raise Malformed("bad DNS label type")
        i += 1 + ln


def _read_name(p, i):
    parts = []
    hops = 0
    n = len(p)
    while True:
        if i >= n:
            raise Malformed("DNS name runs past the message")
        ln = p[i]
        if ln == 0:
            break
        if ln & 0xC0 == 0xC0:
            if i + 1 >= n or hops > 10:
                raise Malformed("bad DNS compression pointer")
            i = ((ln & 0x3F) << 8) | p[i + 1]
            hops += 1
            continue
        if ln & 0xC0 or i + 1 + ln > n:
            raise Malformed("bad DNS label")
        parts.append(p[i + 1:i + 1 + ln])
        i += 1 + ln
        if len(parts) > 64:
            raise Malformed("DNS name too long")
    return _text(b".".join(parts)) if parts else None


def dns_answers(p):
    """(query name, [address bytes]) from a DNS response; raises Malformed."""
    if len(p) < 12:
        raise Malformed("DNS message shorter than its header")
    if not p[2] & 0x80:
        return None, ()
    qd = _u16(p, 4)
    an = _u16(p, 6)
    if qd > 4 or an > 64:
        raise Malformed("implausible DNS counts")
    i = 12
    qname = None
    for _ in range(qd):
        if qname is None:
            qname = _read_name(p, i)
        i = _skip_name(p, i) + 4
    addrs = []
    for _ in range(an):
        i = _skip_name(p, i)
        if i + 10 > len(p):
            raise Malformed("DNS answer truncated")
        rtype = _u16(p, i)
        rdlen = _u16(p, i + 8)
        i += 10
        if i + rdlen > len(p):
            raise Malformed("DNS record data truncated")
        if (rtype == 1 and rdlen == 4) or (rtype == 28 and rdlen == 16):
            addrs.append(bytes(p[i:i + rdlen]))
        i += rdlen
    return qname, addrs


def ftp_data_endpoint(p):
    """(address bytes or None, port) announced on an FTP control channel, or None."""
    if p.startswith(b"227 "):
        a = p.find(b"(")
        z = p.find(b")", a)
        if a < 0 or z < 0:
            return None
        nums = p[a + 1:z].split(b",")
        if len(nums) != 6:
            return None
        try:
            v = [int(x) for x in nums]
        except ValueError:
            return None
        return bytes(v[0:4]), v[4] * 256 + v[5]
    if p.startswith(b"229 "):
        a = p.find(b"(|||")
        z = p.find(b"|)", a)
        if a < 0 or z < 0:
            return None
        try:
            return None, int(p[a + 4:z])
        except ValueError:
            return None
    if p.startswith(b"PORT "):
        nums = p[5:].strip().split(b",")
        if len(nums) != 6:
            return None
        try:
            v = [int(x) for x in nums]
        except ValueError:
            return None
        return bytes(v[0:4]), v[4] * 256 + v[5]
    return None
