"""The shard state machine allows exactly the transitions of its table and reports each one."""

# The table the issue asks for, written out independently of the firmware's copy:
# a change to either one makes this test fail.
EXPECTED = {
    ("absent", "load"): "loaded",
    ("loaded", "start"): "starting",
    ("loaded", "unload"): "absent",
    ("starting", "started"): "running",
    ("starting", "fail"): "errored",
    ("running", "stop"): "stopping",
    ("running", "fail"): "errored",
    ("stopping", "stopped"): "stopped",
    ("stopping", "fail"): "errored",
    ("stopped", "start"): "starting",
    ("stopped", "unload"): "absent",
    ("errored", "restart"): "starting",
    ("errored", "give_up"): "broken",
    ("errored", "unload"): "absent",
    ("broken", "reset"): "absent",
}
STATES = ["absent", "loaded", "starting", "running", "stopping", "stopped", "errored", "broken"]
EVENTS = sorted({e for _, e in EXPECTED})


def test_every_state_event_pair_follows_the_table(fw):
    # For every (state, event): drive a fresh machine to the state along the
    # table, fire the event, and record the new state or the refusal.
    code = f"""
import json
from capdev.cmm.lifecycle import Lifecycle, LifecycleError, STATES, TRANSITIONS
PATHS = {{
 "absent": [], "loaded": ["load"], "starting": ["load", "start"],
 "running": ["load", "start", "started"], "stopping": ["load", "start", "started", "stop"],
 "stopped": ["load", "start", "started", "stop", "stopped"],
 "errored": ["load", "start", "fail"], "broken": ["load", "start", "fail", "give_up"],
}}
out = {{}}
for state in {STATES!r}:
    for event in {EVENTS!r}:
        seen = []
        lc = Lifecycle("s1", lambda *a: seen.append(list(a)))
        for e in PATHS[state]:
            lc.fire(e, "r")
        assert lc.state == state
        n = len(seen)
        try:
            new = lc.fire(event, "why")
            assert seen[-1] == ["s1", event, state, new, "why"] and len(seen) == n + 1
            out[state + "/" + event] = new
        except LifecycleError as err:
            assert lc.state == state and len(seen) == n, "refused event changed state"
            assert state in str(err) and event in str(err)
            out[state + "/" + event] = None
listed = []  # the firmware's table as [state, event, next state]
for item in TRANSITIONS.split():
    pair, nxt = item.split(">")
    listed.append(pair.split(":") + [nxt])
print(json.dumps([out, sorted(STATES), listed]))
"""
    table, states, listed = fw.run_json(code)
    assert sorted(STATES) == states
    assert {(s, e): n for s, e, n in listed} == EXPECTED and len(listed) == len(EXPECTED)
    for state in STATES:
        for event in EVENTS:
            assert table[f"{state}/{event}"] == EXPECTED.get((state, event)), (state, event)


def test_broken_only_leaves_by_an_explicit_reset(fw):
    code = """
import json
from capdev.cmm.lifecycle import Lifecycle, LifecycleError
lc = Lifecycle("s")
for e in ("load", "start", "fail", "give_up"):
    lc.fire(e)
refused = []
for e in ("restart", "start", "load", "unload", "fail", "started"):
    try:
        lc.fire(e)
    except LifecycleError:
        refused.append(e)
live_broken = lc.is_live()
lc.fire("reset")
print(json.dumps([refused, live_broken, lc.state, lc.is_live()]))
"""
    refused, live_broken, state, live_absent = fw.run_json(code)
    assert refused == ["restart", "start", "load", "unload", "fail", "started"]
    assert live_broken is False and state == "absent" and live_absent is False
