# What people and host tools read about flows and captures (the classify
# CLI, benchmarks, tests), and the end of a capture: kept off the device's
# hot path, so a board loads this only when something asks for a flow's
# details.
from capdev.platform import const
from capdev.rnma import flows as ft
from capdev.rnma.classify import REASONS
from capdev.rnma.rules import CLASSES

LEVELS = ("none", "integrity", "confidentiality")  # classify.Classifier.security()

# The flow table's slot layout (flows.py). Keep in step with flows.py.
_F_FIRST = const(0)
_F_LAST = const(1)
_F_PUP = const(2)
_F_PDN = const(3)
_F_BUP = const(4)
_F_BDN = const(5)
_F_IAT = const(6)
_F_JIT = const(7)
_F_DSCP = const(12)
_F_RTT = const(13)
_F_STATE = const(15)
_F_SIGS = const(16)
_F_PEAK = const(23)
_NFIELDS = const(32)
_ST_CLIENT_LOW = const(1)

# Names of the payload signature bits (dpi.SIG_*), in bit order.
SIG_NAMES = (
    "tls", "http", "quic", "stun", "rtp", "dtls", "raknet", "bittorrent", "dht", "utp",
    "gnutella", "wireguard", "openvpn", "rtmp", "sip", "teamspeak", "ssh", "dns",
    "tailscale", "http-media", "http-download", "discord", "rtp-video", "ftp", "tls-hello",
    "rtp-audio",
)


def flow(m, slot, cls=None, conf=None, why=None):
    """Flow ``slot`` of monitor ``m`` as a dict: its stats() and its class."""
    if cls is None:
        cls, conf, why = m.flow_class(slot)
    s = stats(m.table, slot)
    s["class"] = CLASSES[cls]
    s["conf"] = conf
    if why is not None:
        s["why"] = reason(why)
    s["sigs"] = sig_names(m.table.a[slot * _NFIELDS + _F_SIGS])
    return s


def stats(t, slot):
    """Flow ``slot`` of flow table ``t`` as a dict: endpoints and counters."""
    a = t.a
    b = slot * _NFIELDS
    proto, la, lp, ha, hp = ft.split_key(t.keys[slot])
    if a[b + _F_STATE] & _ST_CLIENT_LOW:
        ca, cp, sa, sp = la, lp, ha, hp
    else:
        ca, cp, sa, sp = ha, hp, la, lp
    pk = a[b + _F_PUP] + a[b + _F_PDN]
    by = a[b + _F_BUP] + a[b + _F_BDN]
    rtt = a[b + _F_RTT]
    return {
        "proto": proto, "client": ca, "cport": cp, "server": sa, "sport": sp,
        "pkts_up": a[b + _F_PUP], "pkts_down": a[b + _F_PDN],
        "bytes_up": a[b + _F_BUP], "bytes_down": a[b + _F_BDN],
        "dur_ms": a[b + _F_LAST] - a[b + _F_FIRST], "mean_len": by // pk if pk else 0,
        "iat_ms": a[b + _F_IAT] // (pk - 1) if pk > 1 else 0,
        "jitter_ms": a[b + _F_JIT] >> 4, "peak_kbps": a[b + _F_PEAK],
        "dscp": a[b + _F_DSCP], "rtt_ms": rtt if rtt >= 0 else None,
        "name": t.names[slot] if t.names is not None else None,
    }


def reason(why):
    """The text of a classifier reason number (classify.REASONS)."""
    return REASONS.split("\n")[why]


def sig_names(mask):
    out = []
    for i in range(len(SIG_NAMES)):
        if mask & (1 << i):
            out.append(SIG_NAMES[i])
    return out


def dominant(m):
    """The class with the most bytes over the run (standard when nothing was seen)."""
    best = 9
    ledger = m.ledger
    for c in range(len(ledger)):
        if ledger[c] > ledger[best]:
            best = c
    return CLASSES[best]


def security_level(m):
    level = 0
    for name in m.dests:
        if m.dests[name] > level:
            level = m.dests[name]
    return LEVELS[level]


def problems(m):
    """What monitor ``m`` skipped or counted, by kind (only kinds seen)."""
    out = {}
    for k in m.counts:
        if m.counts[k]:
            out[k] = m.counts[k]
    return out


def finish(m):
    """End of a capture: account every live flow of monitor ``m``; per-class
    bytes over the run."""
    m.tick(m.now)
    evicted = m.counts.get("evicted", 0)
    for slot in m.table.slots():
        m.table.drop(slot)
    m.counts["evicted"] = evicted  # flows closed by the end are not evictions
    return m.ledger
