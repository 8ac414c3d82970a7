"""Evaluate the monitoring agent (RNMA) on the shared real captures.

Prints a confusion matrix of the dominant class per capture, per-capture
results, per-flow agreement with nDPI's labels (under the category mapping in
docs/rnma.md), classifier throughput on CPython and MicroPython, and the heap a
64-flow table plus classifier takes under MicroPython. Last line:
rnma: captures=N accuracy=A ndpi_flow_agreement=B pps_cpython=P pps_micropython=Q
"""

import csv
import ipaddress
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "host"))

from capshard import fwrun, paths  # noqa: E402

sys.path.insert(0, paths.FIRMWARE_DIR)
from capdev.rnma import monitor, pcap, summary  # noqa: E402
from capdev.rnma.rules import CLASSES  # noqa: E402

TRAFFIC = os.path.join(paths.SHARED_DIR, "data", "traffic")

# nDPI category -> class; protocol names refine it (documented in docs/rnma.md).
NDPI_CATEGORY = {
    "Media": "multimedia-streaming", "VPN": "secure-tunnel", "Web": "standard",
    "Download": "high-throughput-data", "Game": "real-time-interactive", "Chat": "standard",
    "VoIP": "telephony", "Cloud": "standard", "Network": "network-control",
    "Collaborative": "standard", "Streaming": "multimedia-streaming", "System": "network-control",
    "Music": "multimedia-streaming", "Video": "multimedia-conferencing",
    "Advertisement": "standard", "ConnCheck": "standard", "IoT-Scada": "oam",
    "RemoteAccess": "low-latency-data", "SocialNetwork": "standard", "Mail": "standard",
    "DataTransfer": "high-throughput-data", "Shopping": "standard", "Banking": "standard",
}
NDPI_PROTOCOL = {
    "BitTorrent": "low-priority-data", "Gnutella": "low-priority-data", "eDonkey": "low-priority-data",
    "RTP": "telephony", "RTCP": "telephony", "SIP": "signaling", "SNMP": "oam", "SSH": "oam",
    "Syslog": "oam", "Zoom": "multimedia-conferencing", "Webex": "multimedia-conferencing",
    "GoogleCall": "multimedia-conferencing", "Discord": "telephony", "RTMP": "multimedia-streaming",
    "HTTP.WindowsUpdate": "high-throughput-data",
}
_FLOW_RE = re.compile(r"^\t\d+\t(\w+) (\S+) <?-> (\S+) .*?\[proto: ([^\]]+)\]")
_CAT_RE = re.compile(r"\[cat: ([^/\]]+)/")


def _endpoint(text):
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    return ipaddress.ip_address(host).packed, int(port)


def ndpi_flows(name):
    """{(proto, frozenset of endpoints): class} from an nDPI report."""
    out = {}
    path = os.path.join(TRAFFIC, "ndpi", name + ".out")
    with open(path) as f:
        for line in f:
            m = _FLOW_RE.match(line)
            c = _CAT_RE.search(line)
            if not m or not c:
                continue
            proto = {"TCP": 6, "UDP": 17}.get(m.group(1))
            if proto is None:
                continue
            pname = m.group(4).split("/", 1)[-1]
            cls = None
            for key, v in NDPI_PROTOCOL.items():
                if key in pname.split(".") or key == pname:
                    cls = v
            cls = cls or NDPI_CATEGORY.get(c.group(1))
            if cls is None:
                continue
            out[(proto, frozenset((_endpoint(m.group(2)), _endpoint(m.group(3)))))] = cls
    return out


def run_capture(path):
    flows = []
    m = monitor.Monitor(max_flows=256, on_flow=flows.append, keep_names=True)
    t0 = time.perf_counter()
    pcap.replay(path, m)
    summary.finish(m)
    return m, flows, time.perf_counter() - t0


MP_BENCH = r"""
import gc, json
from capdev import platform
from capdev.rnma import monitor, pcap, summary
gc.collect()
pk = 0
ms = 0
for path in PATHS:
    m = monitor.Monitor(max_flows=64)
    t0 = platform.ticks_ms()
    pcap.replay(path, m)
    summary.finish(m)
    ms += platform.ticks_diff(platform.ticks_ms(), t0)
    pk += m.packets
print(json.dumps({"packets": pk, "ms": ms}))
"""

MP_HEAP = r"""
import gc, json
from capdev.rnma import monitor, synth, synth_tools
from capdev.rnma import packet as pk
gc.collect()
base = gc.mem_alloc()
m = monitor.Monitor(max_flows=64)
for i in range(80):
    f = synth_tools.ipv4(6, bytes((10, 0, 0, 1)), 40000 + i, bytes((93, 184, i, 1)), 443,
                         synth.client_hello("host%d.example.com" % i))
    m.packet(1000 * i, pk.RAW, f)
m.tick(90000)
gc.collect()
print(json.dumps({"heap": gc.mem_alloc() - base, "flows": len(m.table)}))
"""


def micropython_figures(paths_):
    code = "PATHS = " + json.dumps(paths_) + "\n" + MP_BENCH
    p = fwrun.run("micropython", code, heap_kb=512, timeout=300)
    if p.returncode != 0:
        raise SystemExit("micropython bench failed:\n" + p.stderr)
    r = json.loads(p.stdout.strip().splitlines()[-1])
    h = fwrun.run("micropython", MP_HEAP, heap_kb=256, timeout=60)
    if h.returncode != 0:
        raise SystemExit("micropython heap measurement failed:\n" + h.stderr)
    heap = json.loads(h.stdout.strip().splitlines()[-1])
    return r["packets"] * 1000 // max(r["ms"], 1), heap


def main():
    with open(os.path.join(TRAFFIC, "labels.csv")) as f:
        labels = [(r["file"], r["class"]) for r in csv.DictReader(f)]
    confusion = {}
    correct = 0
    agree = total = 0
    packets = 0
    seconds = 0.0
    print(f"{'capture':34} {'label':26} {'rnma':26} flows  ndpi-agree")
    for name, label in labels:
        m, flows, dt = run_capture(os.path.join(TRAFFIC, "pcap", name))
        packets += m.packets
        seconds += dt
        got = summary.dominant(m)
        correct += got == label
        confusion[(label, got)] = confusion.get((label, got), 0) + 1
        ref = ndpi_flows(name)
        a = n = 0
        for fl in flows:
            key = (fl["proto"], frozenset(((fl["client"], fl["cport"]), (fl["server"], fl["sport"]))))
            if key in ref:
                n += 1
                a += ref[key] == fl["class"]
        agree += a
        total += n
        mark = "ok" if got == label else "MISS"
        print(f"{name:34} {label:26} {got:26} {len(flows):5}  {a}/{n}  {mark}")
    used = [c for c in CLASSES if any(c in k for k in confusion)]
    print("\nconfusion matrix (rows: label, columns: rnma)")
    short = [c[:6] for c in used]
    print(" " * 26 + " ".join(f"{s:>6}" for s in short))
    for r in used:
        print(f"{r:26}" + " ".join(f"{confusion.get((r, c), 0) or '.':>6}" for c in used))
    pps_mp, heap = micropython_figures([os.path.join(TRAFFIC, "pcap", n) for n, _ in labels])
    pps_cp = int(packets / seconds) if seconds else 0
    print(f"\nMicroPython heap for a 64-flow table + classifier: {heap['heap']} bytes"
          f" ({heap['flows']} flows live; target < 24576)")
    acc = correct / len(labels)
    agr = agree / total if total else 0.0
    print(f"rnma: captures={len(labels)} accuracy={acc:.2f} ndpi_flow_agreement={agr:.2f} "
          f"pps_cpython={pps_cp} pps_micropython={pps_mp}")


if __name__ == "__main__":
    main()
