"""The stateless ACL shard, under both runtimes, driven through the shard manager."""

OP = ('{"op": "activate", "shard": "acl-stateless", "ver": "1.0.0", "slot": "security-filtering.firewall", '
      '"module": "capdev.shards.filter.acl_stateless", "cpu": 2, "mem_kb": 16, "bw_kbps": 0, '
      '"prio": "high", "dur_s": 0, "alt": None}')


def test_acl_drops_denied_ports_and_malformed_packets(fw):
    code = f"""
import json
from capdev.cmm.manager import ShardManager
from capdev.rnma import synth_tools
from capdev.rnma import packet as pk
m = ShardManager({{"cpu": 100, "mem_kb": 256, "bw_kbps": 10000}}, 0)
print(m.apply([{OP}]))
acl = m.shard("acl-stateless")
c, s = b"\\xc0\\xa8\\x01\\x17", b"\\xcb\\x00\\x71\\x0a"
verdicts = [
    acl.allow(synth_tools.ipv4(pk.TCP, c, 40000, s, 443, b"x")),
    acl.allow(synth_tools.ipv4(pk.TCP, c, 40000, s, 445, b"x")),
    acl.allow(synth_tools.ipv4(pk.UDP, c, 40000, s, 1900, b"x")),
    acl.allow(synth_tools.ipv4(pk.UDP, c, 40000, s, 53, b"x")),
    acl.allow(b"\\x45\\x00"),
    acl.allow(b""),
]
acl.set_rules([(17, 53)])
verdicts.append(acl.allow(synth_tools.ipv4(pk.UDP, c, 40000, s, 53, b"x")))
verdicts.append(acl.allow(synth_tools.ipv4(pk.TCP, c, 40000, s, 445, b"x")))
print(json.dumps([verdicts, acl.health()]))
"""
    verdicts, health = fw.run_json(code, heap_kb=256)
    assert verdicts == [True, False, False, True, False, False, False, True]
    assert health == {"ok": True, "passed": 3, "dropped": 3, "malformed": 2}
