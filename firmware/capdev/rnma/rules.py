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
# the ports and strings for the names, a few KiB instead of hundreds of small
# lists. The defaults come prebuilt in rules_table.py (generated from the
# text in rulebook.py, which also compiles a board's JSON overrides); as
# constants of a module in a ROMFS image they stay in flash. Order is kept:
# the first matching rule wins.
#
# Compiled name patterns are plain text, each pattern with a space on either
# side: "sensitive" and "integrity" are one such string (" a.com ~word "),
# "names" is one line per run of rules with one class, in rule order, each
# "<class index> a.com b.com ~word \n". Strings, not tuples: a string stays
# in the image, a tuple (and a short word in it, an interned name) is built
# in RAM.
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


def matches(name, text, start=0, end=None):
    """True when ``name`` matches a pattern of ``text[start:end]`` (compiled
    patterns): it or a parent domain is a pattern, or it contains the word
    of a "~word" pattern."""
    if end is None:
        end = len(text)
    i = 0
    while i >= 0:
        s = name[i:] if i else name
        j = text.find(s, start, end)
        while j >= 0:
            k = j + len(s)
            if j > start and k < end and text[j - 1] == " " and text[k] == " ":
                return True
            j = text.find(s, j + 1, end)
        i = name.find(".", i)
        if i >= 0:
            i += 1
    j = text.find(" ~", start, end)
    while j >= 0:
        k = text.find(" ", j + 2, end)
        if text[j + 2:k] in name:
            return True
        j = text.find(" ~", k, end)
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


def load(path):
    """Defaults overridden by the lists in a JSON file (any subset of the
    keys); raises rulebook.RulesError on a bad file."""
    return _book().load(path)
