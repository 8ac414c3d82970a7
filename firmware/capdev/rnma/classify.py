# Flow -> RFC 4594 class with a confidence (0..100). Evidence from payload
# signatures, names (SNI, HTTP Host, DNS), service ports, DSCP marks and
# behaviour is weighed by confidence; the strongest piece wins. Rules are
# scanned, not compiled, so the classifier adds no heap beyond the rule lists.
from capdev.rnma import dpi
from capdev.rnma import flows as ft
from capdev.rnma.rules import CLASSES

TELEPHONY = 0
SIGNALING = 1
CONFERENCING = 2
INTERACTIVE = 3
STREAMING = 4
BROADCAST = 5
LOW_LATENCY = 6
OAM = 7
BULK = 8
STANDARD = 9
LOW_PRIORITY = 10
NETWORK_CONTROL = 11
TUNNEL = 12

LEVELS = ("none", "integrity", "confidentiality")

# RFC 4594 DSCP -> class (marks can be stale, so they are weak evidence).
_DSCP = {46: TELEPHONY, 40: SIGNALING, 34: CONFERENCING, 36: CONFERENCING, 38: CONFERENCING,
         32: INTERACTIVE, 26: STREAMING, 28: STREAMING, 30: STREAMING, 24: BROADCAST,
         18: LOW_LATENCY, 20: LOW_LATENCY, 22: LOW_LATENCY, 16: OAM, 10: BULK, 12: BULK,
         14: BULK, 8: LOW_PRIORITY, 48: NETWORK_CONTROL, 56: NETWORK_CONTROL}

_STRONG_SIGS = (
    (dpi.SIG_BITTORRENT | dpi.SIG_DHT | dpi.SIG_GNUTELLA, LOW_PRIORITY, 95, "p2p protocol"),
    (dpi.SIG_WIREGUARD | dpi.SIG_TAILSCALE | dpi.SIG_OPENVPN, TUNNEL, 90, "vpn protocol"),
    (dpi.SIG_RAKNET, INTERACTIVE, 90, "game protocol"),
    (dpi.SIG_TEAMSPEAK | dpi.SIG_DISCORD, TELEPHONY, 85, "voice chat protocol"),
    (dpi.SIG_RTMP, STREAMING, 90, "rtmp"),
    (dpi.SIG_HTTP_MEDIA, STREAMING, 85, "http media"),
    (dpi.SIG_HTTP_DOWNLOAD, BULK, 85, "http download"),
    (dpi.SIG_DNS, NETWORK_CONTROL, 95, "dns"),
    (dpi.SIG_SIP, SIGNALING, 85, "sip"),
    (dpi.SIG_SSH, OAM, 75, "ssh"),
)
_WEB = dpi.SIG_TLS | dpi.SIG_HTTP | dpi.SIG_QUIC


def class_index(name):
    for i in range(len(CLASSES)):
        if CLASSES[i] == name:
            return i
    raise ValueError("unknown QoS class '" + str(name) + "'")


def name_matches(name, pattern):
    if pattern[0] == "~":
        return pattern[1:] in name
    return name == pattern or (name.endswith(pattern) and name[-len(pattern) - 1] == ".")


class Classifier:
    def __init__(self, rules):
        self.ports = rules["ports"]
        self.names = rules["names"]
        self.sensitive = rules["sensitive"]
        self.integrity = rules["integrity"]
        b = rules["behaviour"]
        self.bulk_s = b["bulk_s"]
        self.small_mean = b["small_mean"]
        self.video_mean = b["video_mean"]
        self.call_min_ms = b["call_min_s"] * 1000
        # Resolve class names once, and fail early on a bad rules file.
        for r in self.ports:
            class_index(r[3])
        for r in self.names:
            class_index(r[1])

    def port_class(self, proto, port):
        """(class, conf) of the first rule matching the protocol and port, or None."""
        pname = "tcp" if proto == 6 else ("udp" if proto == 17 else str(proto))
        for r in self.ports:
            p = r[0]
            if (p == pname or (p == "any" and proto in (6, 17))) and r[1] <= port <= r[2]:
                return class_index(r[3]), r[4]
        return None

    def name_class(self, name):
        if not name:
            return None
        for r in self.names:
            if name_matches(name, r[0]):
                return class_index(r[1])
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
        for p in self.sensitive:
            if name_matches(name, p):
                return 2
        for p in self.integrity:
            if name_matches(name, p):
                return 1
        return 0

    def classify(self, t, slot, p2p=False):
        """(class index, confidence, reason) for one flow of FlowTable `t`."""
        a = t.a
        b = slot * ft.NFIELDS
        st = a[b + ft.F_STATE]
        proto = st >> 8
        sigs = a[b + ft.F_SIGS]
        pup = a[b + ft.F_PUP]
        pdn = a[b + ft.F_PDN]
        pk = pup + pdn
        by = a[b + ft.F_BUP] + a[b + ft.F_BDN]
        mean = by // pk if pk else 0
        dur = a[b + ft.F_LAST] - a[b + ft.F_FIRST]
        _, _, lport, _, hport = ft.split_key(t.keys[slot])
        if st & ft.ST_CLIENT_LOW:
            cport, sport = lport, hport
        else:
            cport, sport = hport, lport
        best_c, best_conf, why = STANDARD, 30, "default"

        hint = a[b + ft.F_HINT]
        if hint:
            best_c, best_conf, why = (hint & 255) - 1, hint >> 8, "expected data channel"

        for mask, c, conf, reason in _STRONG_SIGS:
            if sigs & mask and conf > best_conf:
                best_c, best_conf, why = c, conf, reason
        weak = a[b + ft.F_WEAK]
        if sigs & dpi.SIG_UTP and weak >= 3 and 60 > best_conf:
            best_c, best_conf, why = LOW_PRIORITY, 60, "utp"

        nc = a[b + ft.F_NAME] & 255
        name_c = nc - 1 if nc else None
        if proto in (6, 17):
            port = self.port_class(proto, sport) or self.port_class(proto, cport)
        else:
            port = self.port_class(proto, 0)
        port_c = port[0] if port else None

        media = (sigs & (dpi.SIG_STUN | dpi.SIG_DTLS) or (sigs & dpi.SIG_RTP and weak >= 2))
        if media and best_conf < 85:
            # Real-time media. Which kind: a name or port that says so, else
            # the packet sizes (audio frames are small, video frames large).
            if name_c in (TELEPHONY, CONFERENCING):
                c, conf, reason = name_c, 90, "media to a known service"
            elif port_c in (TELEPHONY, CONFERENCING):
                c, conf, reason = port_c, 88, "media on a known service port"
            elif sigs & dpi.SIG_RTP_AUDIO and not sigs & dpi.SIG_RTP_VIDEO:
                c, conf, reason = TELEPHONY, 85, "rtp with an audio codec"
            elif (sigs & dpi.SIG_RTP_VIDEO or mean >= self.video_mean
                  or a[b + ft.F_LARGE] * 10 >= pk):
                c, conf, reason = CONFERENCING, 80, "real-time media with video-sized packets"
            else:
                c, conf, reason = TELEPHONY, 80, "real-time media with audio-sized packets"
            if conf > best_conf:
                best_c, best_conf, why = c, conf, reason

        if name_c is not None and 85 > best_conf:
            best_c, best_conf, why = name_c, 85, "service name"
        if port is not None and port[1] > best_conf:
            best_c, best_conf, why = port_c, port[1], "service port"

        dscp = a[b + ft.F_DSCP]
        if dscp in _DSCP and 40 > best_conf:
            best_c, best_conf, why = _DSCP[dscp], 40, "dscp mark"

        # Behaviour. qosify: sustained >bulk_pps is bulk.
        if a[b + ft.F_RUNS] >= self.bulk_s and 60 > best_conf and best_c not in (STREAMING, CONFERENCING, TUNNEL):
            best_c, best_conf, why = BULK, 60, "sustained high packet rate"
        if best_conf >= 45:
            return best_c, best_conf, why
        lo = pup if pup < pdn else pdn
        hi = pk - lo
        if proto == 17:
            if pk >= 10 and lo * 10 <= hi and mean >= 400:
                return STREAMING, 55, "one-way stream of large datagrams"
            if sigs & dpi.SIG_QUIC:
                if a[b + ft.F_BDN] >= 100000 and pdn >= 5 * pup and a[b + ft.F_LARGE] * 2 >= pk:
                    return STREAMING, 45, "long QUIC download"
                return best_c, best_conf, why
        if p2p and cport >= 1024 and sport >= 1024 and not sigs & _WEB:
            return LOW_PRIORITY, 55, "unknown peer while a p2p client runs"
        if proto == 17 and mean < self.small_mean and not sigs & _WEB:
            if (dur >= self.call_min_ms and lo >= 5 and lo * 2 >= hi
                    and pk * 1000 >= 8 * dur):
                return TELEPHONY, 45, "long symmetric small-packet datagram flow"
            return INTERACTIVE, 42, "small datagrams"
        if proto == 17 and lo and not sigs & _WEB and 35 > best_conf:
            return INTERACTIVE, 35, "two-way datagrams"
        return best_c, best_conf, why
