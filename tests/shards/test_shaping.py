"""Traffic-shaping shards under both runtimes, activated through the shard
manager: DSCP marking per RFC 4594 (valid IPv4 checksums, IPv6 traffic class),
token-bucket rate and burst set (and re-set) by instructions, strict priority."""

import os
import struct

RFC4594 = {"network-control": 48, "telephony": 46, "signaling": 40, "multimedia-conferencing": 34,
           "real-time-interactive": 32, "multimedia-streaming": 26, "broadcast-video": 24,
           "low-latency-data": 18, "oam": 16, "high-throughput-data": 10, "standard": 0,
           "low-priority-data": 8}


def ipv4(tos, payload=b"x" * 20):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(payload), 0x1234, 0, 64, 17, 0,
                      bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return _with_checksum(hdr) + payload


def _with_checksum(hdr):
    s = sum(struct.unpack("!10H", hdr[:10] + b"\0\0" + hdr[12:20]))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return hdr[:10] + struct.pack("!H", ~s & 0xFFFF) + hdr[12:]


def checksum_ok(pkt):
    s = sum(struct.unpack("!10H", pkt[:20]))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


OP = ("{{'op': '{op}', 'shard': '{id}', 'ver': '1', 'slot': '{slot}', 'cpu': 5, 'mem_kb': 16, "
      "'bw_kbps': {bw}, 'prio': 'medium', 'dur_s': 0, 'alt': None, 'module': 'capdev.shards.shaping.{mod}'}}")


def op(kind, sid, slot, mod, bw=0):
    return OP.format(op=kind, id=sid, slot=slot, mod=mod, bw=bw)


def test_marker_applies_rfc4594_code_points(fw):
    v4 = ipv4(0x03)  # ECN bits set: they must survive
    v6 = bytes([0x60 | 0x0, 0x30]) + os.urandom(38)  # traffic class 0x03 (ECN only)
    code = f"""
import json
from capdev import platform as p
from capdev.cmm.manager import ShardManager
m = ShardManager({{'cpu': 100}}, 8)
acks = m.apply([{op('activate', 'dscp-marker', 'traffic-shaping.marker', 'dscp_marker')}])
mk = m.shard('dscp-marker')
out = {{'acks': acks, 'v4': {{}}, 'v6': {{}}}}
for cls in {sorted(RFC4594)!r} + ['secure-tunnel']:
    a = bytearray(p.unhexlify('{v4.hex()}'))
    b = bytearray(p.unhexlify('{v6.hex()}'))
    out['v4'][cls] = [mk.mark(a, cls), p.hexlify(a)]
    mk.mark(b, cls)
    out['v6'][cls] = p.hexlify(b)
out['not_ip'] = mk.mark(bytearray(b'\\x00' * 30), 'telephony')
try:
    mk.mark(bytearray(20), 'gold')
except ValueError as e:
    out['bad_class'] = str(e)
out['health'] = mk.health()
print(json.dumps(out))
"""
    r = fw.run_json(code, heap_kb=256)
    assert r["acks"][0]["code"] == "activated"
    for cls, want in list(RFC4594.items()) + [("secure-tunnel", 0)]:
        code_set, pkt = r["v4"][cls]
        pkt = bytes.fromhex(pkt)
        assert code_set == want and pkt[1] >> 2 == want and pkt[1] & 3 == 3, cls
        assert checksum_ok(pkt), cls
        six = bytes.fromhex(r["v6"][cls])
        tc = ((six[0] & 0x0F) << 4) | (six[1] >> 4)
        assert tc >> 2 == want and tc & 3 == 3 and six[2:] == v6[2:] and six[1] & 0x0F == v6[1] & 0x0F, cls
    assert r["not_ip"] is None and "unknown QoS class gold" in r["bad_class"]
    assert r["health"]["errors"] == 1 and r["health"]["marked"] == 2 * 13


def test_token_bucket_rate_and_burst_follow_instructions(fw):
    code = f"""
import json
from capdev.cmm.clock import OffsetClock
from capdev.cmm.manager import ShardManager
clock = OffsetClock()
m = ShardManager({{'cpu': 100}}, 8, clock)
out = {{'acks': m.apply([{op('activate', 'token-bucket', 'traffic-shaping.shaper', 'token_bucket', 800)}])}}
tb = m.shard('token-bucket')
def drain():
    n = 0
    while True:
        pkt = tb.dequeue()
        if pkt is None:
            return n
        n += len(pkt)
for _ in range(40):
    tb.enqueue(b'x' * 1000)
out['burst'] = drain()          # 800 kbit/s * 50 ms = 5000 bytes at once
clock.advance(40)
out['after_40ms'] = drain()     # 100 kB/s * 0.04 s (below the burst cap)
clock.advance(500)
out['capped'] = drain()         # idle time never buys more than the burst
out['overflow'] = sum(1 for _ in range(20) if not tb.enqueue(b'y' * 1000))
out['acks2'] = m.apply([{op('adjust', 'token-bucket', 'traffic-shaping.shaper', 'token_bucket', 1600)}])
clock.advance(100)
out['after_adjust'] = drain()   # 200 kB/s * 0.1 s, capped by the new 10000-byte burst
out['too_big'] = tb.enqueue(b'z' * 20000)
out['health'] = tb.health()
print(json.dumps(out))
"""
    r = fw.run_json(code, heap_kb=256)
    assert r["acks"][0]["code"] == "activated" and r["acks2"][0]["code"] == "adjusted"
    assert r["burst"] == 5000
    assert 4000 <= r["after_40ms"] <= 5000  # plus the ms of real time the test itself took
    assert r["capped"] == 5000
    assert r["overflow"] > 0
    assert r["after_adjust"] == 10000
    assert r["too_big"] is False
    h = r["health"]
    assert h["rate_kbps"] == 1600 and h["burst_bytes"] == 10000 and h["dropped"] == 24 + r["overflow"] + 1  # 40 offered, 16 fit the 16 KiB queue


def test_strict_priority_serves_higher_classes_first(fw):
    code = f"""
import json
from capdev.cmm.manager import ShardManager
m = ShardManager({{'cpu': 100}}, 8)
m.apply([{op('activate', 'strict-priority', 'traffic-shaping.scheduler', 'strict_priority')}])
s = m.shard('strict-priority')
for i in range(3):
    for cls in ('low-priority-data', 'standard', 'telephony', 'network-control', 'high-throughput-data'):
        s.enqueue(cls, cls[:3] + str(i))
drops = sum(1 for i in range(20) if not s.enqueue('standard', 'flood'))
order = []
while True:
    x = s.dequeue()
    if x is None:
        break
    order.append(x[1])
print(json.dumps({{'order': order, 'drops': drops, 'health': s.health()}}))
"""
    r = fw.run_json(code, heap_kb=256)
    assert r["order"][:6] == ["net0", "net1", "net2", "tel0", "tel1", "tel2"]
    assert r["order"][6:9] == ["sta0", "sta1", "sta2"] and r["order"][-6:] == ["hig0", "hig1", "hig2",
                                                                                "low0", "low1", "low2"]
    assert r["drops"] == 20 - (16 - 3)
    assert r["health"]["backlog"] == 0 and r["health"]["dropped"] == r["drops"]
