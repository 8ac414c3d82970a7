"""What the demo does and what it expects, as data. Pure: the runner plays
these against real devices and checks each expectation."""

from dataclasses import dataclass, field

# Shard code modules every demo device carries (its board's inventory).
DEVICE_MODULES = [
    "capdev.shards.filter.acl_stateless",
    "capdev.shards.shaping.dscp_marker",
    "capdev.shards.shaping.token_bucket",
    "capdev.shards.shaping.strict_priority",
    "capdev.shards.vpn.aes128_ctr",
    "capdev.shards.vpn.aes256_ctr",
    "capdev.shards.vpn.udp_tunnel",
    "capdev.shards.vpn.local_auth",
    "capdev.shards.vpn.radius_auth",
]

# Reports fast enough for a one-minute demo (a real board reports at most
# every 10 s and holds a class for 30 s after its traffic stops).
DEMO_RNMA = {"report_min_interval_ms": 1500, "hold_ms": 4000}


@dataclass
class DemoDevice:
    device_id: str
    runtime: str
    tier: str
    capacities: dict
    heap_kb: int = 256  # MicroPython heap cap (ignored under CPython)

    def board_overrides(self):
        return {"capacities": dict(self.capacities), "shards": list(DEVICE_MODULES),
                "rnma": dict(DEMO_RNMA)}


@dataclass
class Step:
    """One scenario: an action on a device, then what must become true."""
    title: str
    device_id: str
    traffic: list | None = None       # synthetic traffic kinds to play (None: unchanged)
    crash: list | None = None         # shards to make fail their health checks (None: unchanged)
    expect_running: list = field(default_factory=list)   # shards reported running
    expect_absent: list = field(default_factory=list)    # shards no longer reported
    expect_event: str | None = None   # text of a provider or device event
    timeout_s: float = 30.0
    settle_s: float = 0.0             # the expectation must still hold this long after


DEVICES = [
    # An ESP32-S3 with PSRAM, simulated: the MicroPython unix port with the
    # heap such a board gives (the agent with three small shards needs 184 KiB from
    # .mpy files, 128 KiB from a ROMFS image: docs/performance.md; the demo's VPN
    # shards need more).
    DemoDevice("home-esp32s3", "micropython", "standard", {"cpu": 100, "mem_kb": 160, "bw_kbps": 20000},
               heap_kb=512),
    DemoDevice("office-router", "cpython", "standard", {"cpu": 100, "mem_kb": 512, "bw_kbps": 100000}),
    # A small branch gateway: room for the baseline and a couple of shards.
    DemoDevice("branch-gw", "cpython", "standard", {"cpu": 100, "mem_kb": 64, "bw_kbps": 20000}),
]

BASELINE = ["acl-stateless", "dscp-marker"]

STEPS = [
    Step("a game starts", "home-esp32s3", traffic=["game"], expect_running=["strict-priority"]),
    Step("a video call", "office-router", traffic=["call"], expect_running=["strict-priority"]),
    Step("a 4K stream joins the call", "office-router", traffic=["call", "video"],
         expect_running=["strict-priority", "token-bucket"]),
    Step("a banking session needs a secure channel", "home-esp32s3", traffic=["game", "banking"],
         expect_running=["aes256-ctr", "udp-tunnel", "strict-priority"]),
    Step("the branch gateway fills up with a game and a stream", "branch-gw", traffic=["game", "video"],
         expect_running=["strict-priority", "token-bucket"]),
    Step("banking on the full branch gateway preempts the shaper", "branch-gw",
         traffic=["game", "video", "banking"], expect_running=["udp-tunnel"],
         expect_absent=["token-bucket"], expect_event="preempted"),
    Step("the cipher shard crashes and fails over to its alternate", "home-esp32s3", crash=["aes256-ctr"],
         expect_running=["aes128-ctr"], expect_event="failover", timeout_s=45),
    Step("the fault clears; the provider restores the desired cipher", "home-esp32s3", crash=[],
         expect_running=["aes256-ctr"], expect_absent=["aes128-ctr"], timeout_s=45, settle_s=4),
    Step("the game ends", "home-esp32s3", traffic=["banking"], expect_absent=["strict-priority"]),
]
