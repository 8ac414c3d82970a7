"""The fixed wire vocabulary the catalog, the agreements and the needs share.

QoS classes are the RFC 4594 service classes (lower-case, hyphenated) plus
"secure-tunnel" (VPN traffic whose inner flows are opaque). RFC 4594 states
tolerances in words; the numbers below turn them into what scoring needs:
a nominal one-way latency bound (used when the report gives none) and the
loss a class tolerates. They are our choice, documented in docs/allocator.md.
"""

QOS_CLASSES = (
    "network-control", "telephony", "signaling", "multimedia-conferencing",
    "real-time-interactive", "multimedia-streaming", "broadcast-video",
    "low-latency-data", "oam", "high-throughput-data", "standard",
    "low-priority-data", "secure-tunnel",
)

# The security need is scored like a class, under this key.
SECURITY = "security"
NEED_KEYS = QOS_CLASSES + (SECURITY,)

SECURITY_LEVELS = ("none", "integrity", "confidentiality")
SECURITY_RANK = {name: i for i, name in enumerate(SECURITY_LEVELS)}

PRIORITIES = ("high", "medium", "low")
PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2}

RESOURCES = ("cpu", "mem_kb", "bw_kbps")

# class -> (nominal latency bound ms, tolerated loss %), from RFC 4594 fig. 3
# ("very low" loss -> 0.1 %, "low" -> 0.5 %, "low-medium" -> 1 %, "high" -> 5 %).
CLASS_PROFILE = {
    "network-control": (100, 0.5),
    "telephony": (150, 0.1),
    "signaling": (200, 0.5),
    "multimedia-conferencing": (150, 1.0),
    "real-time-interactive": (80, 0.5),
    "multimedia-streaming": (1000, 1.0),
    "broadcast-video": (500, 0.1),
    "low-latency-data": (200, 0.5),
    "oam": (1000, 0.5),
    "high-throughput-data": (2000, 0.5),
    "standard": (2000, 1.0),
    "low-priority-data": (10000, 5.0),
    "secure-tunnel": (300, 0.5),
}
