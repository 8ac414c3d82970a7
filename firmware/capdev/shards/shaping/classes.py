# RFC 4594 service classes: their DSCPs (RFC 4594 figure 3) and the order a
# strict-priority scheduler serves them in. "secure-tunnel" (opaque VPN
# traffic, not an RFC 4594 class) goes as best effort: its inner classes are
# unknown, so it must not borrow a higher treatment.
DSCP = {
    "network-control": 48,  # CS6
    "telephony": 46,  # EF
    "signaling": 40,  # CS5
    "multimedia-conferencing": 34,  # AF41
    "real-time-interactive": 32,  # CS4
    "multimedia-streaming": 26,  # AF31
    "broadcast-video": 24,  # CS3
    "low-latency-data": 18,  # AF21
    "oam": 16,  # CS2
    "high-throughput-data": 10,  # AF11
    "standard": 0,  # DF
    "low-priority-data": 8,  # CS1
    "secure-tunnel": 0,  # DF
}

# Highest first. Bulk (high-throughput, low-priority) goes below standard.
PRIORITY = ("network-control", "telephony", "signaling", "multimedia-conferencing",
            "real-time-interactive", "broadcast-video", "multimedia-streaming",
            "low-latency-data", "oam", "standard", "secure-tunnel",
            "high-throughput-data", "low-priority-data")


class ClassError(ValueError):
    pass


def check(cls):
    if cls not in DSCP:
        raise ClassError("unknown QoS class " + str(cls))
    return cls
