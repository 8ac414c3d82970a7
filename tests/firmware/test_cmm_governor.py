"""Governor parts: token bucket arithmetic, weighted CPU sharing, throttle-then-stop, heap checks."""

MANUAL_CLOCK = """
from capdev import platform
class Clock:
    def __init__(self):
        self.t = 1000
    def ticks_ms(self):
        return self.t
    def ticks_diff(self, a, b):
        return platform.ticks_diff(a, b)
"""


def test_token_bucket_rate_burst_and_adjust(fw):
    code = MANUAL_CLOCK + """
import json
from capdev.cmm.governor import TokenBucket
c = Clock()
b = TokenBucket(80, c)            # 80 kbit/s = 10000 B/s, 250 ms burst = 2500 B
out = [b.available(), b.take(2500), b.take(1)]
c.t += 100                        # 100 ms -> 1000 B
out += [b.available(), b.take(1000), b.take(1)]
for i in range(100):              # 100 x 1 ms: no rounding loss at low rates
    c.t += 1
out.append(b.available())
slow = TokenBucket(1, c)          # 125 B/s: burst floor is one MTU
out.append(slow.available())
drained = slow.take(1500)
c.t += 8                                        # 8 ms at 125 B/s = 1 B
out.append([drained, slow.take(1), slow.take(1)])
zero = TokenBucket(0, c)
c.t += 10000
out.append(zero.take(1))
b.set_rate(800)                   # adjust: 100000 B/s, cap 25000 B
c.t += 1000
out.append(b.available())
out += [b.passed, b.refused]
print(json.dumps(out))
"""
    out = fw.run_json(code)
    assert out[:3] == [2500, True, False]
    assert out[3:6] == [1000, True, False]
    assert out[6] == 1000
    assert out[7] == 1500
    assert out[8] == [True, True, False]
    assert out[9] is False
    assert out[10] == 25000
    assert out[11] == 2500 + 1000 and out[12] == 2


def test_cpu_time_is_shared_by_weight_under_contention(fw):
    # Three always-due shards with weights 60/30/10 and equal 5 ms steps:
    # the scheduler always runs the lowest pass; time must split 6:3:1.
    code = MANUAL_CLOCK + """
import json
from capdev.cmm.governor import CpuScheduler
from capdev.cmm.ops import schedule
s = CpuScheduler(capacity=100, tick_budget_ms=100)
for key, w in (("a", 60), ("b", 30), ("c", 10)):
    schedule(s, key, w, 0, 0)
runs = {"a": 0, "b": 0, "c": 0}
now = 0
for i in range(1000):
    key = s.due(now)[0]
    runs[key] += 1
    assert s.charge(key, 5, now) == "ok"
print(json.dumps([runs, s.slots["a"].cpu_ms]))
"""
    runs, cpu_a = fw.run_json(code)
    assert abs(runs["a"] - 600) <= 3 and abs(runs["b"] - 300) <= 3 and abs(runs["c"] - 100) <= 3
    assert cpu_a == runs["a"] * 5


def test_overrunning_step_is_throttled_then_stopped(fw):
    code = """
import json
from capdev.cmm.governor import CpuScheduler
from capdev.cmm.ops import schedule
s = CpuScheduler(capacity=100, tick_budget_ms=20, min_slice_ms=2, max_overruns=3, throttle_factor=8)
schedule(s, "hog", 10, 10, 0)
schedule(s, "ok", 50, 10, 0)
out = [s.slice_ms(10), s.slice_ms(50), s.slice_ms(100)]
out.append(s.charge("hog", 40, 0))            # overrun 1: paused 40*8 ms
out.append([s.due(319), s.due(320)])
out.append(s.charge("hog", 1, 320))           # a good step forgives
out.append(s.charge("hog", 40, 330))          # overrun 1 again
out.append(s.charge("hog", 40, 650))          # overrun 2: paused 40*16 ms
out.append([s.slots["hog"].throttled_until, s.slots["hog"].throttles])
out.append(s.charge("hog", 40, 1290))         # overrun 3: stop
print(json.dumps(out))
"""
    out = fw.run_json(code)
    assert out[:3] == [2, 10, 20]
    assert out[3] == "throttle"
    assert out[4] == [["ok"], ["hog", "ok"]] or out[4] == [["ok"], ["ok", "hog"]]
    assert out[5] == "ok" and out[6] == "throttle" and out[7] == "throttle"
    assert out[8] == [650 + 640, 3]
    assert out[9] == "stop"


def test_memory_governor_reports_what_it_can_enforce(fw):
    # The limits in force as the report and the shard's budget show them
    # (reports.limits, ops.budget), from a stand-in for the manager.
    code = """
import json
from capdev.cmm.governor import CpuScheduler, MemoryGovernor
from capdev.cmm.ops import after_load, before_load, budget
from capdev.cmm.reports import limits
g = MemoryGovernor(16)
class Manager:
    mem = g
    cpu = CpuScheduler()
class Entry:
    op = {"cpu": 10, "mem_kb": 32, "bw_kbps": 0, "prio": "low"}
    bucket = None
free = g.free_b()
free = None if free is None else free // 1024
lim = limits(Manager, Entry)
print(json.dumps([g.enforced, free, lim["mem_kb"], lim["heap_floor_kb"], budget(Manager, Entry)["mem_kb"],
                  before_load(g, "s", 8), before_load(g, "s", (free or 0) + 1),
                  after_load(g, "s", 40 * 1024, 32), after_load(g, "s", 1024, 32)]))
"""
    enforced, free, limit, floor, given, fits, too_big, code_over, code_ok = fw.run_json(code, heap_kb=128)
    assert given == limit  # the shard is told the limit the report shows
    if fw.runtime == "micropython":
        assert enforced is True and free > 16 and limit == 32 and floor == 16
        assert fits is None
        assert "below the floor of 16 kb" in too_big
        assert code_over == "heap: s code takes 40 kb, over its mem_kb 32"
        assert code_ok is None
    else:
        assert enforced is False and free is None
        assert limit == "unenforced" and floor == "unenforced"
        assert fits is None and too_big is None and code_over is None and code_ok is None


def test_heap_lent_to_cold_code_counts_as_free(fw):
    """While ops are applied, the apply code itself is on the heap only for
    that call: the floor is checked against the heap as it will be after."""
    code = """
import json
from capdev.cmm.governor import MemoryGovernor
from capdev.cmm.ops import before_load
class Heap:
    def heap_used(self):
        return 100 * 1024
    def heap_free(self):
        return 24 * 1024
g = MemoryGovernor(16, Heap())
refused = before_load(g, "s", 12)       # 24 - 12 < 16
g.lent_b = 10 * 1024                     # cold code that goes after the apply
lent = [g.free_b() // 1024, before_load(g, "s", 12), before_load(g, "s", 20)]
g.lent_b = 0
print(json.dumps([refused, lent, g.free_b() // 1024]))
"""
    refused, (free, fits, too_big), after = fw.run_json(code)
    assert refused == "heap: loading s with mem_kb 12 would leave 12 kb free, below the floor of 16 kb"
    assert free == 34 and fits is None
    assert "would leave 14 kb free" in too_big
    assert after == 24
