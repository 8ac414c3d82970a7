# Flow -> RFC 4594 class with a confidence (0..100). Evidence from payload
# signatures, names (SNI, HTTP Host, DNS), service ports, DSCP marks and
# behaviour is weighed by confidence; the strongest piece wins. Rules are
# scanned in their compact form (rules.py), so the classifier adds no heap.
from capdev.platform import const
from capdev.rnma import dpi
from capdev.rnma import flows as ft
from capdev.rnma.rules import ANY, compiled, matches

# The flow table's slot layout (flows.py), as private constants: they cost
# no RAM in a .mpy. Keep in step with flows.py.
_F_BDN = const(5)
_F_BUP = const(4)
_F_DSCP = const(12)
_F_FIRST = const(0)
_F_HINT = const(25)
_F_LARGE = const(10)
_F_LAST = const(1)
_F_NAME = const(31)
_F_PDN = const(3)
_F_PUP = const(2)
_F_RUNS = const(22)
_F_SIGS = const(16)
_F_STATE = const(15)
_F_WEAK = const(18)
_NFIELDS = const(32)
_ST_CLIENT_LOW = const(1)

_TELEPHONY = const(0)
_SIGNALING = const(1)
_CONFERENCING = const(2)
_INTERACTIVE = const(3)
_STREAMING = const(4)
_BROADCAST = const(5)
_LOW_LATENCY = const(6)
_OAM = const(7)
BULK = const(8)  # public: the monitor uses it
_STANDARD = const(9)
_LOW_PRIORITY = const(10)
_NETWORK_CONTROL = const(11)
_TUNNEL = const(12)

# Why a flow got its class: a number while the device runs (_WHY_*), and
# line n of REASONS for number n, read only by summary.flow on hosts. One
# string instead of 28 keeps their str objects (~40 B each) off a board.
_WHY_DEFAULT = const(0)         # default
_WHY_DATA_CHANNEL = const(1)    # expected data channel
_WHY_P2P = const(2)             # p2p protocol
_WHY_VPN = const(3)             # vpn protocol
_WHY_GAME = const(4)            # game protocol
_WHY_VOICE_CHAT = const(5)      # voice chat protocol
_WHY_RTMP = const(6)            # rtmp
_WHY_HTTP_MEDIA = const(7)      # http media
_WHY_HTTP_DOWNLOAD = const(8)   # http download
_WHY_DNS = const(9)             # dns
_WHY_SIP = const(10)            # sip
_WHY_SSH = const(11)            # ssh
_WHY_UTP = const(12)            # utp
_WHY_MEDIA_NAME = const(13)     # media to a known service
_WHY_MEDIA_PORT = const(14)     # media on a known service port
_WHY_RTP_AUDIO = const(15)      # rtp with an audio codec
_WHY_MEDIA_VIDEO = const(16)    # real-time media with video-sized packets
_WHY_MEDIA_AUDIO = const(17)    # real-time media with audio-sized packets
_WHY_NAME = const(18)           # service name
_WHY_PORT = const(19)           # service port
_WHY_DSCP = const(20)           # dscp mark
_WHY_RATE = const(21)           # sustained high packet rate
_WHY_ONE_WAY = const(22)        # one-way stream of large datagrams
_WHY_QUIC_DOWNLOAD = const(23)  # long QUIC download
_WHY_P2P_PEER = const(24)       # unknown peer while a p2p client runs
_WHY_CALL = const(25)           # long symmetric small-packet datagram flow
_WHY_SMALL = const(26)          # small datagrams
_WHY_TWO_WAY = const(27)        # two-way datagrams
REASONS = (
    "default\n"
    "expected data channel\n"
    "p2p protocol\n"
    "vpn protocol\n"
    "game protocol\n"
    "voice chat protocol\n"
    "rtmp\n"
    "http media\n"
    "http download\n"
    "dns\n"
    "sip\n"
    "ssh\n"
    "utp\n"
    "media to a known service\n"
    "media on a known service port\n"
    "rtp with an audio codec\n"
    "real-time media with video-sized packets\n"
    "real-time media with audio-sized packets\n"
    "service name\n"
    "service port\n"
    "dscp mark\n"
    "sustained high packet rate\n"
    "one-way stream of large datagrams\n"
    "long QUIC download\n"
    "unknown peer while a p2p client runs\n"
    "long symmetric small-packet datagram flow\n"
    "small datagrams\n"
    "two-way datagrams"
)


def _dscp_class(d):
    """RFC 4594's class for DSCP ``d``, or None (marks can be stale, so they
    are weak evidence). Written out as comparisons: a dict of the same 20
    entries, or tuples to test membership in, are heap objects on a board;
    this code stays in flash."""
    if d == 46:
        return _TELEPHONY  # EF
    if d == 40:
        return _SIGNALING  # CS5
    if d == 34 or d == 36 or d == 38:
        return _CONFERENCING  # AF41-43
    if d == 32:
        return _INTERACTIVE  # CS4
    if d == 26 or d == 28 or d == 30:
        return _STREAMING  # AF31-33
    if d == 24:
        return _BROADCAST  # CS3
    if d == 18 or d == 20 or d == 22:
        return _LOW_LATENCY  # AF21-23
    if d == 16:
        return _OAM  # CS2
    if d == 10 or d == 12 or d == 14:
        return BULK  # AF11-13
    if d == 8:
        return _LOW_PRIORITY  # CS1
    if d == 48 or d == 56:
        return _NETWORK_CONTROL  # CS6, CS7
    return None

_WEB = dpi.SIG_TLS | dpi.SIG_HTTP | dpi.SIG_QUIC


def _conf(ev):
    """The confidence in evidence packed by Classifier._evidence."""
    return (ev >> 8) & 255


class Classifier:
    def __init__(self, rules):
        rules = compiled(rules)  # fails early on a bad rules file
        self.ports = rules["ports"]
        self.names = rules["names"]
        self.sensitive = rules["sensitive"]
        self.integrity = rules["integrity"]
        b = rules["behaviour"]
        self.bulk_s = b["bulk_s"]
        self.small_mean = b["small_mean"]
        self.video_mean = b["video_mean"]
        self.call_min_ms = b["call_min_s"] * 1000

    def port_class(self, proto, port):
        """(class, conf) of the first rule matching the protocol and port, or None."""
        t = self.ports  # 4 little-endian uint16 per rule (rules.py)
        web = proto == 6 or proto == 17
        for i in range(0, len(t), 8):
            p = t[i] | (t[i + 1] << 8)
            if ((p == proto or (p == ANY and web)) and t[i + 2] | (t[i + 3] << 8) <= port
                    and port <= t[i + 4] | (t[i + 5] << 8)):
                return t[i + 7], t[i + 6]
        return None

    def name_class(self, name):
        if not name:
            return None
        names = self.names  # one line per rule group: "<class> patterns \n" (rules.py)
        start = 0
        while start < len(names):
            end = names.find("\n", start)
            if matches(name, names, start, end):
                return int(names[start:names.find(" ", start)])
            start = end + 1
        return None

    def name_code(self, name):
        """A name squeezed into one int for the flow table and DNS cache:
        bits 0-7 class+1 (0 = no rule), bits 8-9 security level, bit 16 set."""
        c = self.name_class(name)
        return 0x10000 | (self.security(name) << 8) | (c + 1 if c is not None else 0)

    def security(self, name):
        """0 none, 1 integrity, 2 confidentiality for a destination name."""
        if not name:
            return 0
        if matches(name, self.sensitive):
            return 2
        if matches(name, self.integrity):
            return 1
        return 0

    def classify(self, t, slot, p2p=False):
        """(class index, confidence, reason: a _WHY_ number) for one flow of
        FlowTable `t`."""
        ev = self._evidence(t, slot, p2p)
        return ev & 255, (ev >> 8) & 255, ev >> 16

    def _evidence(self, t, slot, p2p):
        # The winning evidence as one int, class | confidence << 8 | reason
        # << 16 (like the table's _F_HINT and _F_CLS). Its constants fold
        # into plain ints; as (class, confidence, reason) triples they were
        # 23 tuples on the heap of a board (~1.5 KiB).
        a = t.a
        b = slot * _NFIELDS
        st = a[b + _F_STATE]
        proto = st >> 8
        sigs = a[b + _F_SIGS]
        pup = a[b + _F_PUP]
        pdn = a[b + _F_PDN]
        pk = pup + pdn
        by = a[b + _F_BUP] + a[b + _F_BDN]
        mean = by // pk if pk else 0
        dur = a[b + _F_LAST] - a[b + _F_FIRST]
        _, _, lport, _, hport = ft.split_key(t.keys[slot])
        if st & _ST_CLIENT_LOW:
            cport, sport = lport, hport
        else:
            cport, sport = hport, lport
        best = _STANDARD | 30 << 8 | _WHY_DEFAULT << 16

        hint = a[b + _F_HINT]  # (conf << 8) | class+1
        if hint:
            best = (hint - 1) | _WHY_DATA_CHANNEL << 16

        # The strongest payload signature: highest confidence first, on a
        # tie the one written first.
        if sigs & (dpi.SIG_BITTORRENT | dpi.SIG_DHT | dpi.SIG_GNUTELLA):
            ev = _LOW_PRIORITY | 95 << 8 | _WHY_P2P << 16
        elif sigs & dpi.SIG_DNS:
            ev = _NETWORK_CONTROL | 95 << 8 | _WHY_DNS << 16
        elif sigs & (dpi.SIG_WIREGUARD | dpi.SIG_TAILSCALE | dpi.SIG_OPENVPN):
            ev = _TUNNEL | 90 << 8 | _WHY_VPN << 16
        elif sigs & dpi.SIG_RAKNET:
            ev = _INTERACTIVE | 90 << 8 | _WHY_GAME << 16
        elif sigs & dpi.SIG_RTMP:
            ev = _STREAMING | 90 << 8 | _WHY_RTMP << 16
        elif sigs & (dpi.SIG_TEAMSPEAK | dpi.SIG_DISCORD):
            ev = _TELEPHONY | 85 << 8 | _WHY_VOICE_CHAT << 16
        elif sigs & dpi.SIG_HTTP_MEDIA:
            ev = _STREAMING | 85 << 8 | _WHY_HTTP_MEDIA << 16
        elif sigs & dpi.SIG_HTTP_DOWNLOAD:
            ev = BULK | 85 << 8 | _WHY_HTTP_DOWNLOAD << 16
        elif sigs & dpi.SIG_SIP:
            ev = _SIGNALING | 85 << 8 | _WHY_SIP << 16
        elif sigs & dpi.SIG_SSH:
            ev = _OAM | 75 << 8 | _WHY_SSH << 16
        else:
            ev = 0
        if _conf(ev) > _conf(best):
            best = ev
        weak = a[b + _F_WEAK]
        if sigs & dpi.SIG_UTP and weak >= 3 and 60 > _conf(best):
            best = _LOW_PRIORITY | 60 << 8 | _WHY_UTP << 16

        nc = a[b + _F_NAME] & 255
        name_c = nc - 1 if nc else None
        if proto == 6 or proto == 17:
            port = self.port_class(proto, sport) or self.port_class(proto, cport)
        else:
            port = self.port_class(proto, 0)
        port_c = port[0] if port else None

        media = (sigs & (dpi.SIG_STUN | dpi.SIG_DTLS) or (sigs & dpi.SIG_RTP and weak >= 2))
        if media and _conf(best) < 85:
            # Real-time media. Which kind: a name or port that says so, else
            # the packet sizes (audio frames are small, video frames large).
            if name_c == _TELEPHONY or name_c == _CONFERENCING:
                ev = name_c | 90 << 8 | _WHY_MEDIA_NAME << 16
            elif port_c == _TELEPHONY or port_c == _CONFERENCING:
                ev = port_c | 88 << 8 | _WHY_MEDIA_PORT << 16
            elif sigs & dpi.SIG_RTP_AUDIO and not sigs & dpi.SIG_RTP_VIDEO:
                ev = _TELEPHONY | 85 << 8 | _WHY_RTP_AUDIO << 16
            elif (sigs & dpi.SIG_RTP_VIDEO or mean >= self.video_mean
                  or a[b + _F_LARGE] * 10 >= pk):
                ev = _CONFERENCING | 80 << 8 | _WHY_MEDIA_VIDEO << 16
            else:
                ev = _TELEPHONY | 80 << 8 | _WHY_MEDIA_AUDIO << 16
            if _conf(ev) > _conf(best):
                best = ev

        if name_c is not None and 85 > _conf(best):
            best = name_c | 85 << 8 | _WHY_NAME << 16
        if port is not None and port[1] > _conf(best):
            best = port_c | port[1] << 8 | _WHY_PORT << 16

        dscp_c = _dscp_class(a[b + _F_DSCP]) if 40 > _conf(best) else None
        if dscp_c is not None:
            best = dscp_c | 40 << 8 | _WHY_DSCP << 16

        # Behaviour. qosify: sustained >bulk_pps is bulk.
        best_c = best & 255
        if (a[b + _F_RUNS] >= self.bulk_s and 60 > _conf(best) and best_c != _STREAMING
                and best_c != _CONFERENCING and best_c != _TUNNEL):
            best = BULK | 60 << 8 | _WHY_RATE << 16
        if _conf(best) >= 45:
            return best
        lo = pup if pup < pdn else pdn
        hi = pk - lo
        if proto == 17:
            if pk >= 10 and lo * 10 <= hi and mean >= 400:
                return _STREAMING | 55 << 8 | _WHY_ONE_WAY << 16
            if sigs & dpi.SIG_QUIC:
                if a[b + _F_BDN] >= 100000 and pdn >= 5 * pup and a[b + _F_LARGE] * 2 >= pk:
                    return _STREAMING | 45 << 8 | _WHY_QUIC_DOWNLOAD << 16
                return best
        if p2p and cport >= 1024 and sport >= 1024 and not sigs & _WEB:
            return _LOW_PRIORITY | 55 << 8 | _WHY_P2P_PEER << 16
        if proto == 17 and mean < self.small_mean and not sigs & _WEB:
            if (dur >= self.call_min_ms and lo >= 5 and lo * 2 >= hi
                    and pk * 1000 >= 8 * dur):
                return _TELEPHONY | 45 << 8 | _WHY_CALL << 16
            return _INTERACTIVE | 42 << 8 | _WHY_SMALL << 16
        if proto == 17 and lo and not sigs & _WEB and 35 > _conf(best):
            return _INTERACTIVE | 35 << 8 | _WHY_TWO_WAY << 16
        return best
