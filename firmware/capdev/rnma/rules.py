# Default classifier rules. A board may override any list with a JSON file of
# the same shape (see load()). Rules describe kinds of traffic (well-known
# service ports, service domain names), not particular captures.
#
# JSON (override) shapes:
# ports: [proto, first, last, class, confidence]; proto "udp", "tcp", "any" or
#        an IP protocol number as a string ("50" for ESP).
# names: [pattern, class]; "example.com" matches the domain and its subdomains,
#        "~word" matches any name containing word.
#
# On the device the rules are held compiled: one bytes object of uint16s for
# the ports and one string per class for the names, a few KiB instead of
# hundreds of small lists. The defaults come prebuilt in rules_table.py
# (generated from the text in rulebook.py, which also compiles a board's
# JSON overrides); as constants of a module in a ROMFS image they stay in
# flash. Order is kept: the first matching rule wins.
from capdev import unload

CLASSES = (
    "telephony", "signaling", "multimedia-conferencing", "real-time-interactive",
    "multimedia-streaming", "broadcast-video", "low-latency-data", "oam",
    "high-throughput-data", "standard", "low-priority-data", "network-control",
    "secure-tunnel",
)

# Port rule proto codes in the compiled table: an IP protocol number, or these.
ANY = 256    # "any": TCP or UDP
NEVER = 257  # "6"/"17" by number: the JSON form names TCP and UDP only as "tcp"/"udp"


def class_index(name):
    for i in range(len(CLASSES)):
        if CLASSES[i] == name:
            return i
    raise ValueError("unknown QoS class '" + str(name) + "'")


def matches(name, exact, contains):
    """True when ``name`` matches compiled patterns: it or a parent domain is
    in ``exact``, or it contains a word of ``contains``."""
    i = 0
    while i >= 0:
        s = name[i:] if i else name
        j = exact.find(s)
        while j > 0:
            if exact[j - 1] == " " and exact[j + len(s)] == " ":
                return True
            j = exact.find(s, j + 1)
        i = name.find(".", i)
        if i >= 0:
            i += 1
    for w in contains:
        if w in name:
            return True
    return False


# Behaviour thresholds.
BEHAVIOUR = {
    "bulk_pps": 100,        # qosify: above this packet rate a flow is bulk...
    "bulk_s": 5,            # ...when it lasts this many seconds
    "small_mean": 500,      # qosify: mean packet size under this is latency-sensitive
    "video_mean": 300,      # media flows with larger mean packets carry video
    "call_min_s": 5,        # a symmetric small-packet UDP flow this long is a call
    "p2p_flows": 16,        # unknown high-port flows per minute that mean a P2P client
}


_defaults = None


def _book():
    from capdev.rnma import rulebook

    return rulebook


def defaults():
    """The default rules, compiled (read once from rules_table.py, then shared)."""
    global _defaults
    if _defaults is None:
        from capdev.rnma import rules_table as t

        _defaults = (t.PORTS, t.NAMES, t.SENSITIVE, t.INTEGRITY)
        t = None
        unload("capdev.rnma.rules_table")  # the constants stay, referenced here
    return {"ports": _defaults[0], "names": _defaults[1], "sensitive": _defaults[2],
            "integrity": _defaults[3], "behaviour": BEHAVIOUR}


def compiled(rules):
    """The rules with any list (JSON) form compiled; raises ValueError on an
    unknown class name."""
    for k in ("ports", "names", "sensitive", "integrity"):
        if isinstance(rules[k], list):
            return _book().compiled(rules)
    return dict(rules)


class RulesError(ValueError):
    pass


def load(path):
    """Defaults overridden by the lists in a JSON file (any subset of the keys)."""
    return _book().load(path)
