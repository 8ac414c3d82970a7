"""Failure policy: restart with growing backoff, give up after N failures inside the window."""


def test_backoff_then_give_up_within_the_window(fw):
    code = """
import json
from capdev.cmm.health import HealthPolicy, HealthRecord
from capdev.cmm.ops import failure
p = HealthPolicy(max_failures=3, window_ms=60000, backoff_ms=1000, backoff_max_ms=1500)
r = HealthRecord()
out = [list(failure(r, 0, "a", p)), list(failure(r, 1000, "b", p)), list(failure(r, 2000, "c", p))]
# failures older than the window no longer count
r2 = HealthRecord()
spread = [list(failure(r2, t, "x", p)) for t in (0, 40000, 70000, 100000, 101000)]
print(json.dumps([out, r.errors, r.last_error, spread, r2.errors]))
"""
    out, errors, last, spread, errors2 = fw.run_json(code)
    assert out == [["restart", 1000], ["restart", 1500], ["give_up", 3]]  # 2000 capped at 1500
    assert errors == 3 and last == "c"
    # t=70000 drops t=0; t=100000 drops 40000; t=101000 has 70000,100000,101000 in window
    assert spread == [["restart", 1000], ["restart", 1500], ["restart", 1500],
                      ["restart", 1500], ["give_up", 3]]
    assert errors2 == 5


def test_latency_and_heartbeat_in_the_snapshot(fw):
    code = """
import json
from capdev.cmm.health import HealthRecord
from capdev.cmm.reports import snapshot
r = HealthRecord()
for ms in (4, 4, 4, 12, 4):
    r.latency(ms)
r.beat(1000)
print(json.dumps(snapshot(r, 1250)))
"""
    snap = fw.run_json(code)
    assert snap["steps"] == 5 and snap["beat_age_ms"] == 250
    assert snap["lat_ms"]["last"] == 4 and snap["lat_ms"]["max"] == 12
    assert 4 < snap["lat_ms"]["avg"] < 12  # the spike moved the average, not to the spike


def test_event_log_is_bounded_and_counts_drops(fw):
    code = """
import json
from capdev.cmm.health import EventLog
log = EventLog(limit=5)
for i in range(8):
    log.emit("s", "ev", i, "r" + str(i))
log.emit("s", "fail", 9, "x", "running", "errored")
items = log.drain()
print(json.dumps([[e["t"] for e in items], items[-1], log.dropped, log.drain()]))
"""
    ts, last, dropped, again = fw.run_json(code)
    assert ts == [4, 5, 6, 7, 9] and dropped == 4 and again == []
    assert last == {"shard": "s", "ev": "fail", "t": 9, "reason": "x", "from": "running", "to": "errored"}
