"""`capshard classify FILE [--json]`: run the monitoring agent over a capture."""

import ipaddress
import json
import os
import sys

from .. import paths

PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 50: "esp", 47: "gre", 2: "igmp"}


def _rnma():
    if paths.FIRMWARE_DIR not in sys.path:
        sys.path.insert(0, paths.FIRMWARE_DIR)
    from capdev.rnma import monitor, pcap, summary  # noqa: E402  (firmware package)
    return monitor, pcap, summary


def classify_file(path, max_flows=256):
    """Classify one capture; returns the result dict (see --json)."""
    monitor, pcap, summary = _rnma()
    flows = []
    m = monitor.Monitor(max_flows=max_flows, on_flow=flows.append, keep_names=True)
    reader = pcap.replay(path, m)
    summary.finish(m)
    out_flows = []
    for f in sorted(flows, key=lambda s: -(s["bytes_up"] + s["bytes_down"])):
        out_flows.append({
            "proto": PROTO_NAMES.get(f["proto"], str(f["proto"])),
            "src": str(ipaddress.ip_address(f["client"])), "sport": f["cport"],
            "dst": str(ipaddress.ip_address(f["server"])), "dport": f["sport"],
            "bytes": f["bytes_up"] + f["bytes_down"],
            "packets": f["pkts_up"] + f["pkts_down"],
            "class": f["class"], "conf": f["conf"], "name": f["name"],
            "rtt_ms": f["rtt_ms"],
        })
    from capdev.rnma.rules import CLASSES
    return {
        "file": os.path.basename(path),
        "class": summary.dominant(m),
        "bytes_by_class": {CLASSES[i]: m.ledger[i] for i in range(len(CLASSES)) if m.ledger[i]},
        "security": {"level": summary.security_level(m), "dests": sorted(m.dests)},
        "packets": m.packets,
        "problems": summary.problems(m),
        "capture_error": reader.error if reader is not None else m.last_problem,
        "flows": out_flows,
    }


def handle(args):
    if not os.path.isfile(args.file):
        print(f"capshard classify: {args.file}: no such file", file=sys.stderr)
        return 2
    res = classify_file(args.file, args.max_flows)
    if res["capture_error"]:
        print(f"capshard classify: {args.file}: {res['capture_error']}", file=sys.stderr)
        if res["packets"] == 0:
            return 1
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"{res['file']}: {res['class']}  ({res['packets']} packets, {len(res['flows'])} flows,"
          f" security {res['security']['level']})")
    for f in res["flows"]:
        print(f"  {f['proto']:5} {f['src']}:{f['sport']} -> {f['dst']}:{f['dport']}"
              f"  {f['bytes']:>9} B  {f['class']} ({f['conf']}){'  ' + f['name'] if f['name'] else ''}")
    if res["problems"]:
        print("  skipped/counted: " + ", ".join(f"{k}={v}" for k, v in sorted(res["problems"].items())))
    return 0


def register(subparsers):
    p = subparsers.add_parser("classify", help="classify the traffic in a pcap/pcapng capture")
    p.add_argument("file", help="pcap or pcapng capture")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--max-flows", type=int, default=256, help="flow table bound (default 256)")
    p.set_defaults(func=handle)
