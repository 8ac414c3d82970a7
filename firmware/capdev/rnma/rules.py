# Default classifier rules. A board may override any list with a JSON file of
# the same shape (see load()). Rules describe kinds of traffic (well-known
# service ports, service domain names), not particular captures.
#
# ports: [proto, first, last, class, confidence]; proto "udp", "tcp", "any" or
#        an IP protocol number as a string ("50" for ESP).
# names: [pattern, class]; "example.com" matches the domain and its subdomains,
#        "~word" matches any name containing word.
import json

from capdev import platform

CLASSES = (
    "telephony", "signaling", "multimedia-conferencing", "real-time-interactive",
    "multimedia-streaming", "broadcast-video", "low-latency-data", "oam",
    "high-throughput-data", "standard", "low-priority-data", "network-control",
    "secure-tunnel",
)

PORTS = [
    # network control: routing, name and address services
    ["any", 53, 53, "network-control", 90], ["udp", 67, 68, "network-control", 90],
    ["udp", 546, 547, "network-control", 90], ["udp", 123, 123, "network-control", 85],
    ["tcp", 179, 179, "network-control", 90], ["udp", 520, 521, "network-control", 90],
    ["udp", 5353, 5353, "network-control", 85], ["udp", 5355, 5355, "network-control", 85],
    ["udp", 1900, 1900, "network-control", 80], ["udp", 3702, 3702, "network-control", 80],
    ["udp", 137, 138, "network-control", 75], ["udp", 5351, 5351, "network-control", 80],
    ["tcp", 646, 646, "network-control", 85], ["udp", 3784, 3785, "network-control", 85],
    ["udp", 1985, 1985, "network-control", 85], ["tcp", 853, 853, "network-control", 80],
    ["1", 0, 0, "network-control", 80], ["2", 0, 0, "network-control", 85],
    ["58", 0, 0, "network-control", 80], ["89", 0, 0, "network-control", 90],
    ["112", 0, 0, "network-control", 90], ["103", 0, 0, "network-control", 90],
    # operations and management
    ["udp", 161, 162, "oam", 90], ["tcp", 161, 162, "oam", 85], ["tcp", 22, 23, "oam", 75],
    ["udp", 514, 514, "oam", 85], ["tcp", 6514, 6514, "oam", 85], ["tcp", 830, 830, "oam", 85],
    ["udp", 69, 69, "oam", 70], ["udp", 2055, 2055, "oam", 75], ["udp", 4739, 4739, "oam", 75],
    ["udp", 6343, 6343, "oam", 75], ["tcp", 49, 49, "oam", 75], ["udp", 1812, 1813, "oam", 70],
    # call signalling
    ["any", 5060, 5061, "signaling", 80], ["udp", 2427, 2427, "signaling", 75],
    ["udp", 2727, 2727, "signaling", 75], ["tcp", 1720, 1720, "signaling", 75],
    ["udp", 1719, 1719, "signaling", 75],
    # voice
    ["udp", 4569, 4569, "telephony", 85], ["udp", 9987, 9987, "telephony", 80],
    ["udp", 8767, 8767, "telephony", 80], ["any", 64738, 64738, "telephony", 80],
    ["udp", 2008, 2011, "telephony", 60],  # TeamSpeak accounting/weblist
    # conferencing media ports (Zoom, Google Meet, Webex)
    ["udp", 8801, 8810, "multimedia-conferencing", 75],
    ["udp", 19302, 19309, "multimedia-conferencing", 70],
    ["udp", 9000, 9000, "multimedia-conferencing", 55],
    # games
    ["any", 3074, 3074, "real-time-interactive", 75], ["udp", 27000, 27050, "real-time-interactive", 70],
    ["tcp", 25565, 25565, "real-time-interactive", 70], ["udp", 19132, 19133, "real-time-interactive", 70],
    ["udp", 5000, 5500, "real-time-interactive", 50], ["any", 6112, 6119, "real-time-interactive", 65],
    ["any", 1119, 1119, "real-time-interactive", 60], ["udp", 22101, 22102, "real-time-interactive", 70],
    ["any", 24100, 24131, "real-time-interactive", 65], ["udp", 3659, 3659, "real-time-interactive", 65],
    ["udp", 7777, 7788, "real-time-interactive", 55], ["udp", 9308, 9308, "real-time-interactive", 60],
    # streaming: RTMP, RTSP, speakers and casting devices
    ["tcp", 1935, 1935, "multimedia-streaming", 80], ["any", 554, 554, "multimedia-streaming", 75],
    ["tcp", 8554, 8554, "multimedia-streaming", 70], ["tcp", 1400, 1400, "multimedia-streaming", 65],
    ["tcp", 1443, 1443, "multimedia-streaming", 65], ["tcp", 8008, 8009, "multimedia-streaming", 65],
    ["tcp", 7000, 7000, "multimedia-streaming", 55], ["tcp", 7100, 7100, "multimedia-streaming", 55],
    ["tcp", 4070, 4070, "multimedia-streaming", 65], ["tcp", 3689, 3689, "multimedia-streaming", 60],
    # bulk transfer
    ["tcp", 20, 21, "high-throughput-data", 80], ["tcp", 989, 990, "high-throughput-data", 80],
    ["tcp", 873, 873, "high-throughput-data", 80], ["tcp", 445, 445, "high-throughput-data", 70],
    ["any", 2049, 2049, "high-throughput-data", 70], ["tcp", 3260, 3260, "high-throughput-data", 75],
    ["tcp", 119, 119, "high-throughput-data", 60], ["tcp", 563, 563, "high-throughput-data", 60],
    # peer-to-peer
    ["any", 6881, 6889, "low-priority-data", 75], ["any", 6346, 6347, "low-priority-data", 75],
    ["tcp", 4662, 4662, "low-priority-data", 70], ["udp", 4672, 4672, "low-priority-data", 70],
    ["any", 51413, 51413, "low-priority-data", 70],
    # interactive and transactional
    ["any", 3389, 3389, "low-latency-data", 70], ["tcp", 5900, 5901, "low-latency-data", 70],
    ["tcp", 1883, 1883, "low-latency-data", 60], ["tcp", 8883, 8883, "low-latency-data", 60],
    ["tcp", 5222, 5223, "low-latency-data", 55],
    # tunnels
    ["udp", 500, 500, "secure-tunnel", 85], ["udp", 4500, 4500, "secure-tunnel", 85],
    ["any", 1194, 1194, "secure-tunnel", 85], ["tcp", 1723, 1723, "secure-tunnel", 85],
    ["udp", 1701, 1701, "secure-tunnel", 80], ["udp", 51820, 51820, "secure-tunnel", 80],
    ["udp", 41641, 41641, "secure-tunnel", 80], ["50", 0, 0, "secure-tunnel", 90],
    ["51", 0, 0, "secure-tunnel", 90], ["47", 0, 0, "secure-tunnel", 80],
    # the web: weak on purpose, names and behaviour decide
    ["tcp", 80, 80, "standard", 35], ["tcp", 443, 443, "standard", 35],
    ["tcp", 8080, 8080, "standard", 30], ["tcp", 8443, 8443, "standard", 30],
    ["udp", 443, 443, "standard", 35],
]

NAMES = [
    # conferencing
    ["zoom.us", "multimedia-conferencing"], ["zoom.com", "multimedia-conferencing"],
    ["zoomgov.com", "multimedia-conferencing"], ["webex.com", "multimedia-conferencing"],
    ["wbx2.com", "multimedia-conferencing"], ["ciscospark.com", "multimedia-conferencing"],
    ["teams.microsoft.com", "multimedia-conferencing"], ["teams.live.com", "multimedia-conferencing"],
    ["meet.google.com", "multimedia-conferencing"], ["gotomeeting.com", "multimedia-conferencing"],
    ["bluejeans.com", "multimedia-conferencing"], ["whereby.com", "multimedia-conferencing"],
    ["~jitsi", "multimedia-conferencing"], ["turn.l.google.com", "multimedia-conferencing"],
    # voice
    ["skype.com", "telephony"], ["signal.org", "telephony"], ["~voip", "telephony"],
    ["vonage.com", "telephony"],
    # streaming audio and video
    ["youtube.com", "multimedia-streaming"], ["googlevideo.com", "multimedia-streaming"],
    ["ytimg.com", "multimedia-streaming"], ["ggpht.com", "multimedia-streaming"],
    ["youtube-nocookie.com", "multimedia-streaming"], ["youtu.be", "multimedia-streaming"],
    ["netflix.com", "multimedia-streaming"], ["nflxvideo.net", "multimedia-streaming"],
    ["nflxso.net", "multimedia-streaming"], ["twitch.tv", "multimedia-streaming"],
    ["ttvnw.net", "multimedia-streaming"], ["jtvnw.net", "multimedia-streaming"],
    ["hulu.com", "multimedia-streaming"], ["hulustream.com", "multimedia-streaming"],
    ["disneyplus.com", "multimedia-streaming"], ["dssott.com", "multimedia-streaming"],
    ["bamgrid.com", "multimedia-streaming"], ["primevideo.com", "multimedia-streaming"],
    ["aiv-cdn.net", "multimedia-streaming"], ["hbomax.com", "multimedia-streaming"],
    ["vimeo.com", "multimedia-streaming"], ["vimeocdn.com", "multimedia-streaming"],
    ["dailymotion.com", "multimedia-streaming"], ["dmcdn.net", "multimedia-streaming"],
    ["~dazn", "multimedia-streaming"], ["spotify.com", "multimedia-streaming"],
    ["scdn.co", "multimedia-streaming"], ["spotifycdn.com", "multimedia-streaming"],
    ["deezer.com", "multimedia-streaming"], ["dzcdn.net", "multimedia-streaming"],
    ["soundcloud.com", "multimedia-streaming"], ["sndcdn.com", "multimedia-streaming"],
    ["pandora.com", "multimedia-streaming"], ["tidal.com", "multimedia-streaming"],
    ["~pluralsight", "multimedia-streaming"], ["crunchyroll.com", "multimedia-streaming"],
    ["peacocktv.com", "multimedia-streaming"], ["paramountplus.com", "multimedia-streaming"],
    ["tiktokcdn.com", "multimedia-streaming"], ["tiktokv.com", "multimedia-streaming"],
    ["bilibili.com", "multimedia-streaming"], ["iqiyi.com", "multimedia-streaming"],
    ["tv.apple.com", "multimedia-streaming"], ["music.apple.com", "multimedia-streaming"],
    ["sonos.com", "multimedia-streaming"], ["~livestream", "multimedia-streaming"],
    # games
    ["roblox.com", "real-time-interactive"], ["rbxcdn.com", "real-time-interactive"],
    ["riotgames.com", "real-time-interactive"], ["leagueoflegends.com", "real-time-interactive"],
    ["callofduty.com", "real-time-interactive"], ["activision.com", "real-time-interactive"],
    ["xboxlive.com", "real-time-interactive"], ["playfabapi.com", "real-time-interactive"],
    ["mihoyo.com", "real-time-interactive"], ["hoyoverse.com", "real-time-interactive"],
    ["minecraft.net", "real-time-interactive"], ["supercell.com", "real-time-interactive"],
    ["ea.com", "real-time-interactive"], ["epicgames.dev", "real-time-interactive"],
    ["elderscrollsonline.com", "real-time-interactive"], ["~gameserver", "real-time-interactive"],
    # software delivery and bulk storage
    ["windowsupdate.com", "high-throughput-data"], ["update.microsoft.com", "high-throughput-data"],
    ["delivery.mp.microsoft.com", "high-throughput-data"], ["download.microsoft.com", "high-throughput-data"],
    ["dl.google.com", "high-throughput-data"], ["swcdn.apple.com", "high-throughput-data"],
    ["steamcontent.com", "high-throughput-data"], ["download.nvidia.com", "high-throughput-data"],
    ["archive.ubuntu.com", "high-throughput-data"], ["deb.debian.org", "high-throughput-data"],
    ["dropboxusercontent.com", "high-throughput-data"], ["~download", "high-throughput-data"],
    # peer-to-peer
    ["~tracker", "low-priority-data"],
]

# Destinations whose traffic needs confidentiality (money, identity).
SENSITIVE = [
    "paypal.com", "paypalobjects.com", "stripe.com", "stripe.network", "braintreegateway.com",
    "adyen.com", "klarna.com", "wise.com", "revolut.com", "venmo.com", "squareup.com",
    "visa.com", "mastercard.com", "americanexpress.com", "chase.com", "bankofamerica.com",
    "wellsfargo.com", "citi.com", "hsbc.com", "barclays.co.uk", "ing.com",
    "~bank", "~payment", "~checkout", "~securepay",
]

# Destinations whose traffic needs integrity (software and firmware updates).
INTEGRITY = [
    "windowsupdate.com", "update.microsoft.com", "delivery.mp.microsoft.com",
    "swcdn.apple.com", "mesu.apple.com", "~firmware", "~ota.",
]

# Behaviour thresholds.
BEHAVIOUR = {
    "bulk_pps": 100,        # qosify: above this packet rate a flow is bulk...
    "bulk_s": 5,            # ...when it lasts this many seconds
    "small_mean": 500,      # qosify: mean packet size under this is latency-sensitive
    "video_mean": 300,      # media flows with larger mean packets carry video
    "call_min_s": 5,        # a symmetric small-packet UDP flow this long is a call
    "p2p_flows": 16,        # unknown high-port flows per minute that mean a P2P client
}


def defaults():
    return {"ports": PORTS, "names": NAMES, "sensitive": SENSITIVE,
            "integrity": INTEGRITY, "behaviour": BEHAVIOUR}


class RulesError(ValueError):
    pass


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
