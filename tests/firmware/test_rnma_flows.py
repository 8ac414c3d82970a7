"""The flow table: fixed bound, eviction order, per-flow statistics, and the
heap a 64-flow table plus classifier takes under MicroPython."""

import json

from capshard import fwrun

PRELUDE = """
from capdev.rnma import flows as ft
import json
def addr(i):
    return bytes((10, 0, i >> 8, i & 255))
SRV = bytes((93, 184, 216, 34))
"""


def test_bound_and_least_recent_eviction(fw):
    code = PRELUDE + """
evicted = []
t = ft.FlowTable(8, idle_ms=60000, on_evict=lambda tb, s: evicted.append(ft.split_key(tb.keys[s])[2]))
for i in range(8):
    s, up = t.lookup(6, addr(1), 1000 + i, SRV, 443, i * 10)
    t.account(s, up, 100, i * 10, 0)
s, up = t.lookup(6, addr(1), 1000, SRV, 443, 100)   # touch the oldest again
t.account(s, up, 100, 100, 0)
s, _ = t.lookup(6, addr(1), 2000, SRV, 443, 110)    # table full: least recent goes
first = list(evicted)
for i in range(100):
    t.lookup(17, addr(i), 5000, SRV, 53, 200 + i)
print(json.dumps([len(t), t.evicted, first, len(evicted)]))
"""
    size, nevicted, first, calls = fw.run_json(code)
    assert size == 8
    assert first == [1001]  # not 1000, which was touched again
    assert nevicted == calls == 101


def test_room_grows_by_doubling_up_to_the_bound_and_flows_keep_their_state(fw):
    code = PRELUDE + """
import gc
t = ft.FlowTable(64, idle_ms=60000)
room = [t.slots_allocated]
slots = {}
for i in range(70):
    s, up = t.lookup(6, addr(i), 1000, SRV, 443, i)
    t.account(s, up, 100 + i, i, 0)
    slots[i] = s
    if t.slots_allocated != room[-1]:
        room.append(t.slots_allocated)
# flows 6..69 are the 64 live ones (0..5 were evicted, least recent first)
kept = [t.get(slots[i], 11) for i in range(6, 70)]  # _F_MAXLEN: each flow's own packet
print(json.dumps([room, len(t), t.evicted, kept == [100 + i for i in range(6, 70)], len(t.keys), len(t.a)]))
"""
    room, size, evicted, intact, nkeys, nfields = fw.run_json(code)
    assert room == [4, 8, 16, 32, 64]
    assert size == 64 and evicted == 6 and intact
    assert nkeys == 64 and nfields == 64 * 32


def test_idle_flows_go_first_and_expire(fw):
    code = PRELUDE + """
t = ft.FlowTable(4, idle_ms=1000)
for i in range(4):
    s, up = t.lookup(17, addr(i), 4000, SRV, 4000, 5000 if i != 2 else 0)
    t.account(s, up, 60, 5000 if i != 2 else 0, 0)
t.lookup(17, addr(9), 4000, SRV, 4000, 5200)
keys = sorted(ft.split_key(k)[1][3] for k in t.index)
gone = t.expire(7000)
print(json.dumps([keys, t.evicted_idle, gone, len(t)]))
"""
    keys, idle, gone, left = fw.run_json(code)
    assert keys == [0, 1, 3, 9]  # the idle flow (2) made room, not the least recent
    assert idle == 1 and gone == 4 and left == 0


def test_both_directions_meet_and_stats(fw):
    code = PRELUDE + """
t = ft.FlowTable(4)
c = addr(7)
s, up = t.lookup(6, c, 50000, SRV, 443, 0);   t.tcp_handshake(s, up, 0x02, 0);   t.account(s, up, 60, 0, 0)
s2, up2 = t.lookup(6, SRV, 443, c, 50000, 30); t.tcp_handshake(s2, up2, 0x12, 30); t.account(s2, up2, 60, 30, 0)
s3, up3 = t.lookup(6, c, 50000, SRV, 443, 35); t.tcp_handshake(s3, up3, 0x10, 35); t.account(s3, up3, 52, 35, 0)
for i in range(10):
    s4, up4 = t.lookup(6, SRV, 443, c, 50000, 40 + 20 * i)
    t.account(s4, up4, 1500, 40 + 20 * i, 46)
from capdev.rnma import summary
st = summary.stats(t, s)
print(json.dumps([s == s2 == s3 == s4, up, up2, up3, up4, st['rtt_ms'], st['pkts_up'], st['pkts_down'],
                  st['bytes_down'], st['dscp'], st['iat_ms'], st['cport'], st['sport'], len(t)]))
"""
    same, up, up2, up3, up4, rtt, pup, pdn, bdn, dscp, iat, cport, sport, n = fw.run_json(code)
    assert same and n == 1
    assert [up, up2, up3, up4] == [True, False, True, False]
    assert rtt == 35  # (SYN -> SYN/ACK) + (SYN/ACK -> ACK)
    assert (pup, pdn, bdn, dscp) == (2, 11, 60 + 15000, 46)
    assert iat == 18  # 220 ms over 12 gaps (integer mean)
    assert (cport, sport) == (50000, 443)


def test_64_flow_table_and_classifier_fit_in_24k_heap_on_micropython():
    code = """
import gc, json
from capdev.rnma import monitor, synth, synth_tools
from capdev.rnma import packet as pk
gc.collect()
base = gc.mem_alloc()
m = monitor.Monitor(max_flows=64)
for i in range(90):
    name = ('www.bank%d.example.com' if i % 3 else 'cdn%d.googlevideo.com') % i
    f = synth_tools.ipv4(6, bytes((10, 0, 0, 1)), 40000 + i, bytes((93, 184, i, 1)), 443, synth.client_hello(name))
    m.packet(1000 * i, pk.RAW, f)
    m.packet(1000 * i + 5, pk.RAW, synth_tools.ipv4(17, bytes((10, 0, 0, 1)), 30000 + i, bytes((8, 8, i, 8)), 3074, bytes(60)))
rep = m.tick(95000)
gc.collect()
print(json.dumps({"heap": gc.mem_alloc() - base, "flows": len(m.table), "evicted": m.table.evicted}))
"""
    # Importing the .py sources compiles them on the heap; a board runs .mpy.
    # The figure that matters is the delta after import.
    p = fwrun.run("micropython", code, heap_kb=256)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["flows"] == 64 and r["evicted"] > 0
    assert r["heap"] < 24 * 1024, r
