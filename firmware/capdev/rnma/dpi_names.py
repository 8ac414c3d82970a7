# Name parsers of the DPI: TLS SNI, gQUIC SNI, HTTP Host and content hints,
# DNS answers and FTP data-channel announcements. They run on a flow's first
# payload packets only, so they live apart from the per-packet signature code
# (dpi.py re-exports them by name) and a device unloads them between uses.
# Every parser is bounds-checked; malformed input raises Malformed or gives None.
from capdev.rnma.dpi import SIG_HTTP_DOWNLOAD, SIG_HTTP_MEDIA

_MEDIA_PATH = (".m3u8", ".mpd", ".m4s", ".m4v", ".m4a", ".mp4", ".webm", ".ts?", "videoplayback",
               "/hls/", "/dash/", "/livesim/", "manifest", "chunk", "segment", ".aac", ".mp3")
_DOWNLOAD_PATH = (".exe", ".msi", ".msu", ".cab", ".zip", ".iso", ".img", ".dmg", ".pkg", ".deb",
                  ".rpm", ".apk", ".tar", ".gz", ".7z", ".bin", ".psf", "/msdownload/",
                  "delivery.mp.microsoft", "windowsupdate", "/download")
_MEDIA_TYPES = (b"video/", b"audio/", b"application/dash+xml", b"mpegurl", b"application/vnd.ms-sstr")
_DOWNLOAD_TYPES = (b"application/octet-stream", b"application/x-msdownload", b"application/zip",
                   b"application/x-dosexec", b"application/vnd.microsoft", b"application/x-iso",
                   b"application/x-debian", b"application/vnd.android")


class Malformed(Exception):
    pass

def _u16(b, i):
    return (b[i] << 8) | b[i + 1]


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
