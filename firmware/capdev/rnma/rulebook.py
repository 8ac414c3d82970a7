# The classifier rules' source: the default rules as text, in rule order
# (the first match wins), and the compilers that turn them, or a board's JSON
# override lists, into the compact forms rules.py scans. The device never
# loads it for the defaults (they ship compiled in rules_table.py, generated
# from this text); only a board's JSON override brings it in.
#
# PORTS: (class, "proto first[-last] confidence, ..."); proto tcp, udp, any
#        (TCP or UDP) or an IP protocol number.
# NAMES: (class, "pattern ..."); "example.com" matches the domain and its
#        subdomains, "~word" any name containing word.
# JSON override shapes (load()): ports [proto, first, last, class, conf] with
# proto "udp", "tcp", "any" or a number as a string ("50" for ESP); names
# [pattern, class]; sensitive/integrity [pattern, ...]; behaviour {name: value}.
import json

from capdev import platform
from capdev.rnma.rules import ANY, BEHAVIOUR, CLASSES, NEVER, defaults


# Here, not in rules.py: only compiling rules from text or JSON needs them.
class RulesError(ValueError):
    pass


def class_index(name):
    for i in range(len(CLASSES)):
        if CLASSES[i] == name:
            return i
    raise ValueError("unknown QoS class '" + str(name) + "'")


def _proto_code(p):
    if p == "tcp":
        return 6
    if p == "udp":
        return 17
    if p == "any":
        return ANY
    n = int(p)
    return NEVER if n in (6, 17) else n


def _u16(out, n):
    out.append(n & 255)
    out.append(n >> 8)


def compile_ports(rules):
    """[proto, first, last, class, conf] lists -> bytes, 4 little-endian
    uint16 per rule: proto code, first, last, (class << 8) | conf."""
    out = bytearray()
    for r in rules:
        if not 0 <= r[1] <= r[2] <= 65535:
            raise ValueError("port range " + str(r[1]) + "-" + str(r[2]))
        _u16(out, _proto_code(r[0]))
        _u16(out, r[1])
        _u16(out, r[2])
        _u16(out, (class_index(r[3]) << 8) | r[4])
    return bytes(out)


def compile_patterns(patterns):
    """Name patterns -> " pattern pattern ~word " (the form rules.matches scans)."""
    return " " + " ".join(patterns) + " "


def compile_names(rules):
    """[pattern, class] lists -> one line per run of rules with the same
    class (order kept): "<class index> pattern ... \n", lines joined."""
    out = []
    run = []
    cls = None
    for pattern, name in rules:
        c = class_index(name)
        if c != cls and run:
            out.append(str(cls) + compile_patterns(run) + "\n")
            run = []
        cls = c
        run.append(pattern)
    if run:
        out.append(str(cls) + compile_patterns(run) + "\n")
    return "".join(out)


def _compile_text_ports(groups):
    # ("class", "proto first[-last] conf, ...") in rule order.
    rules = []
    for cls, text in groups:
        for rule in text.split(","):
            p, rng, conf = rule.split()
            dash = rng.find("-")
            first = int(rng[:dash]) if dash > 0 else int(rng)
            last = int(rng[dash + 1:]) if dash > 0 else first
            rules.append((p, first, last, cls, int(conf)))
    return compile_ports(rules)


def build_defaults():
    """(ports, names, sensitive, integrity), compiled from the text below.
    The device reads them prebuilt from rules_table.py (generated from this
    by `python -m capshard.build rules-table`), not from here."""
    names = []
    for cls, text in NAMES:
        names.append(str(class_index(cls)) + compile_patterns(text.split()) + "\n")
    return (_compile_text_ports(PORTS), "".join(names), compile_patterns(SENSITIVE.split()),
            compile_patterns(INTEGRITY.split()))


def compiled(rules):
    """The rules with any list (JSON) form compiled; raises ValueError on an
    unknown class name."""
    out = dict(rules)
    if isinstance(out["ports"], list):
        out["ports"] = compile_ports(out["ports"])
    if isinstance(out["names"], list):
        out["names"] = compile_names(out["names"])
    for k in ("sensitive", "integrity"):
        if isinstance(out[k], list):
            out[k] = compile_patterns(out[k])
    return out


def load(path):
    """Defaults overridden by the lists in a JSON file (any subset of the keys)."""
    rules = defaults()
    if path is None:
        return rules
    raw = platform.read_file(path)
    if raw is None:
        raise RulesError(path + ": rules file not found")
    try:
        data = json.loads(raw)
    except ValueError:
        raise RulesError(path + ": not valid JSON")
    if not isinstance(data, dict):
        raise RulesError(path + ": top level must be an object")
    for k in data:
        if k not in rules:
            raise RulesError(path + ": unknown rules key '" + k + "'")
        if k == "behaviour":
            b = dict(BEHAVIOUR)
            b.update(data[k])
            rules[k] = b
        else:
            rules[k] = data[k]
    return rules


PORTS = (
    # network control: routing, name and address services
    ("network-control", "any 53 90, udp 67-68 90, udp 546-547 90, udp 123 85, tcp 179 90, udp 520-521 90,"
     " udp 5353 85, udp 5355 85, udp 1900 80, udp 3702 80, udp 137-138 75, udp 5351 80, tcp 646 85,"
     " udp 3784-3785 85, udp 1985 85, tcp 853 80, 1 0 80, 2 0 85, 58 0 80, 89 0 90, 112 0 90, 103 0 90"),
    # operations and management
    ("oam", "udp 161-162 90, tcp 161-162 85, tcp 22-23 75, udp 514 85, tcp 6514 85, tcp 830 85, udp 69 70,"
     " udp 2055 75, udp 4739 75, udp 6343 75, tcp 49 75, udp 1812-1813 70"),
    # call signalling
    ("signaling", "any 5060-5061 80, udp 2427 75, udp 2727 75, tcp 1720 75, udp 1719 75"),
    # voice (2008-2011: TeamSpeak accounting/weblist)
    ("telephony", "udp 4569 85, udp 9987 80, udp 8767 80, any 64738 80, udp 2008-2011 60"),
    # conferencing media ports (Zoom, Google Meet, Webex)
    ("multimedia-conferencing", "udp 8801-8810 75, udp 19302-19309 70, udp 9000 55"),
    # games
    ("real-time-interactive", "any 3074 75, udp 27000-27050 70, tcp 25565 70, udp 19132-19133 70,"
     " udp 5000-5500 50, any 6112-6119 65, any 1119 60, udp 22101-22102 70, any 24100-24131 65,"
     " udp 3659 65, udp 7777-7788 55, udp 9308 60"),
    # streaming: RTMP, RTSP, speakers and casting devices
    ("multimedia-streaming", "tcp 1935 80, any 554 75, tcp 8554 70, tcp 1400 65, tcp 1443 65,"
     " tcp 8008-8009 65, tcp 7000 55, tcp 7100 55, tcp 4070 65, tcp 3689 60"),
    # bulk transfer
    ("high-throughput-data", "tcp 20-21 80, tcp 989-990 80, tcp 873 80, tcp 445 70, any 2049 70,"
     " tcp 3260 75, tcp 119 60, tcp 563 60"),
    # peer-to-peer
    ("low-priority-data", "any 6881-6889 75, any 6346-6347 75, tcp 4662 70, udp 4672 70, any 51413 70"),
    # interactive and transactional
    ("low-latency-data", "any 3389 70, tcp 5900-5901 70, tcp 1883 60, tcp 8883 60, tcp 5222-5223 55"),
    # tunnels
    ("secure-tunnel", "udp 500 85, udp 4500 85, any 1194 85, tcp 1723 85, udp 1701 80, udp 51820 80,"
     " udp 41641 80, 50 0 90, 51 0 90, 47 0 80"),
    # the web: weak on purpose, names and behaviour decide
    ("standard", "tcp 80 35, tcp 443 35, tcp 8080 30, tcp 8443 30, udp 443 35"),
)

NAMES = (
    ("multimedia-conferencing", "zoom.us zoom.com zoomgov.com webex.com wbx2.com ciscospark.com"
     " teams.microsoft.com teams.live.com meet.google.com gotomeeting.com bluejeans.com whereby.com"
     " ~jitsi turn.l.google.com"),
    ("telephony", "skype.com signal.org ~voip vonage.com"),
    # streaming audio and video
    ("multimedia-streaming", "youtube.com googlevideo.com ytimg.com ggpht.com youtube-nocookie.com youtu.be"
     " netflix.com nflxvideo.net nflxso.net twitch.tv ttvnw.net jtvnw.net hulu.com hulustream.com"
     " disneyplus.com dssott.com bamgrid.com primevideo.com aiv-cdn.net hbomax.com vimeo.com vimeocdn.com"
     " dailymotion.com dmcdn.net ~dazn spotify.com scdn.co spotifycdn.com deezer.com dzcdn.net"
     " soundcloud.com sndcdn.com pandora.com tidal.com ~pluralsight crunchyroll.com peacocktv.com"
     " paramountplus.com tiktokcdn.com tiktokv.com bilibili.com iqiyi.com tv.apple.com music.apple.com"
     " sonos.com ~livestream"),
    ("real-time-interactive", "roblox.com rbxcdn.com riotgames.com leagueoflegends.com callofduty.com"
     " activision.com xboxlive.com playfabapi.com mihoyo.com hoyoverse.com minecraft.net supercell.com"
     " ea.com epicgames.dev elderscrollsonline.com ~gameserver"),
    # software delivery and bulk storage
    ("high-throughput-data", "windowsupdate.com update.microsoft.com delivery.mp.microsoft.com"
     " download.microsoft.com dl.google.com swcdn.apple.com steamcontent.com download.nvidia.com"
     " archive.ubuntu.com deb.debian.org dropboxusercontent.com ~download"),
    ("low-priority-data", "~tracker"),
)

# Destinations whose traffic needs confidentiality (money, identity).
SENSITIVE = (
    "paypal.com paypalobjects.com stripe.com stripe.network braintreegateway.com adyen.com klarna.com"
    " wise.com revolut.com venmo.com squareup.com visa.com mastercard.com americanexpress.com chase.com"
    " bankofamerica.com wellsfargo.com citi.com hsbc.com barclays.co.uk ing.com"
    " ~bank ~payment ~checkout ~securepay")

# Destinations whose traffic needs integrity (software and firmware updates).
INTEGRITY = ("windowsupdate.com update.microsoft.com delivery.mp.microsoft.com"
             " swcdn.apple.com mesu.apple.com ~firmware ~ota.")
