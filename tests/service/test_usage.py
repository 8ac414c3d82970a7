"""Usage accounting from the instruction log: exact figures for a log written
by hand (leases that lapse on the device, full states, failures, a period cut)."""

import math

from capshard.service.usage import intervals, summarize


def op(verb, shard, cpu=10, mem_kb=4, bw_kbps=100, dur_s=0):
    return {"op": verb, "shard": shard, "cpu": cpu, "mem_kb": mem_kb, "bw_kbps": bw_kbps, "dur_s": dur_s}


def inst(iid, seq, acked_at, ops, full=False, state="SUCCEEDED", codes=None, tier="lab", dev="d1"):
    done = {"activate": "activated", "adjust": "adjusted", "deactivate": "deactivated"}
    codes = codes or {}
    results = [{"shard": o["shard"], "op": o["op"], "code": codes.get(o["shard"], done[o["op"]]), "reason": ""}
               for o in ops]
    return {"id": iid, "device_id": dev, "seq": seq, "acked_at": acked_at, "ops": ops, "full_state": int(full),
            "state": state, "tier": tier, "ack": {"id": iid, "status": "applied", "results": results}}


LOG = [
    inst("a", 1, 100.0, [op("activate", "base", cpu=2)], full=True),
    inst("b", 2, 110.0, [op("activate", "game", cpu=5, dur_s=30)]),          # lapses on the device at 140
    inst("c", 3, 150.0, [op("activate", "video", cpu=8, dur_s=100)]),
    inst("d", 4, 170.0, [op("adjust", "video", cpu=4, dur_s=100)]),          # new budget from 170, lease to 270
    inst("e", 5, 200.0, [op("activate", "base", cpu=2)], full=True),         # full state: video ends at 200
    inst("f", 6, 210.0, [op("activate", "never", cpu=50)], state="REJECTED"),
    inst("g", 7, 220.0, [op("activate", "lost", cpu=50)], state="TIMED_OUT"),
    inst("h", 8, 230.0, [op("activate", "broken", cpu=50)], state="FAILED", codes={"broken": "failed"}),
    inst("i", 9, 240.0, [op("deactivate", "base")]),
    inst("z", 1, 105.0, [op("activate", "base", cpu=3)], full=True, tier="lean", dev="d2"),
]


def test_intervals_follow_acks_leases_full_states_and_ignore_what_was_not_done():
    got = sorted((i.device_id, i.shard, i.start, i.end, i.cpu) for i in intervals(LOG))
    assert got == [
        ("d1", "base", 100.0, 200.0, 2),     # re-activated by the second full state: a new interval
        ("d1", "base", 200.0, 240.0, 2),
        ("d1", "game", 110.0, 140.0, 5),     # expired on the device after its 30 s lease
        ("d1", "video", 150.0, 170.0, 8),
        ("d1", "video", 170.0, 200.0, 4),
        ("d2", "base", 105.0, math.inf, 3),  # baseline: runs until removed
    ]


def test_summary_per_device_shard_and_tier_with_a_period_cut():
    report = summarize(LOG, 120.0, 300.0)
    rows = {(r["device"], r["shard"], r["tier"]): r for r in report["rows"]}
    assert rows[("d1", "game", "lab")]["shard_seconds"] == 20.0            # 120..140
    assert rows[("d1", "video", "lab")]["cpu_seconds"] == 20 * 8 + 30 * 4
    assert rows[("d1", "base", "lab")]["shard_seconds"] == 120.0           # 120..240
    assert rows[("d2", "base", "lean")]["shard_seconds"] == 180.0          # 120..300, still running
    assert rows[("d2", "base", "lean")]["bw_kbit"] == 180.0 * 100
    assert report["totals"]["shard_seconds"] == 20 + 50 + 120 + 180
    assert report["by_tier"]["lean"]["cpu_seconds"] == 180.0 * 3
    assert {r["shard"] for r in report["rows"]} == {"base", "game", "video"}   # rejected/timed out/failed: nothing
    only = summarize(LOG, 0.0, 300.0, device_id="d2")
    assert [r["device"] for r in only["rows"]] == ["d2"]
