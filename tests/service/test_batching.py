"""Group commit in the fleet store and the provider's batched recording, on
SQLite and PostgreSQL: a batch commits whole or not at all (also when the
process dies in the middle), keeps the order of what it wrote, and one bad
message in a batch costs only itself."""

import os
import sqlite3
import subprocess
import sys
import textwrap

import cbor2
import pytest

from capshard import wire
from capshard.service.fleet import Fleet
from capshard.service.policy import minimal_baseline
from capshard.service.provider import ProviderService
from capshard.service.store import IN_PROGRESS, SUCCEEDED, WORK_CHECK, WORK_REPLAN, StoreError, open_store

HOST = os.path.join(os.path.dirname(__file__), "..", "..", "host")
NEEDS = {"real-time-interactive": {"bw_kbps": 300, "lat_ms": 50, "flows": 2, "conf": 90}}


def test_a_batch_commits_all_its_writes_in_order(store, store_url):
    store.set_online("d1", True, 1.0)
    other = open_store(store_url)          # another provider on the same store
    try:
        with store.batch():
            for i in range(50):
                store.add_event("d1", "note", f"n{i}", 2.0 + i)
            store.request_work("d1", WORK_CHECK, 30.0)
            store.request_work("d1", WORK_REPLAN, 20.0)   # merged: both bits, the earlier time
            store.record_needs("d2", {"v": 1, "classes": NEEDS}, 3.0)   # a device new to the store
            assert _committed_notes(other, store_url) == 0     # nothing visible before the commit
        assert [e["text"] for e in other.events(kinds=["note"])] == [f"n{i}" for i in range(50)]
        (w,) = other.due_work(25.0)
        assert (w["device_id"], w["pending"], w["pending_after"]) == ("d1", WORK_CHECK | WORK_REPLAN, 20.0)
        assert other.get_device("d2")["needs"]["classes"] == NEEDS
    finally:
        other.close()


def _committed_notes(other, store_url):
    """What another reader sees now (a plain SQLite reader: the store's own
    transactions would wait for the batch's write lock)."""
    if other.dialect == "sqlite":
        conn = sqlite3.connect(store_url)
        try:
            return conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'note'").fetchone()[0]
        finally:
            conn.close()
    return len(other.events(kinds=["note"]))


def test_a_failed_batch_leaves_nothing_and_the_store_goes_on(store):
    store.add_event(None, "note", "before", 1.0)
    with pytest.raises(StoreError):
        with store.batch():
            store.add_event(None, "note", "inside", 2.0)
            store.set_online("d1", True, 2.0)
            with store.tx() as cur:
                cur.execute("INSERT INTO no_such_table VALUES (1)")
    assert [e["text"] for e in store.events()] == ["before"]
    assert store.get_device("d1") is None
    store.add_event(None, "note", "after", 3.0)
    assert [e["text"] for e in store.events()] == ["before", "after"]


def test_a_process_killed_in_the_middle_of_a_batch_commits_none_of_it(store, store_url):
    store.add_event(None, "note", "committed", 1.0)
    child = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {HOST!r})
        from capshard.service.store import open_store
        s = open_store({store_url!r})
        s.add_event(None, "note", "own commit", 2.0)
        with s.batch():
            for i in range(20):
                s.set_online(f"k{{i}}", True, 3.0)
                s.add_event(f"k{{i}}", "note", "in the batch", 3.0)
            with s.tx() as cur:   # the deferred writes reach the database before the commit
                s._flush(cur)
                s._events, s._work = [], {{}}
            os.kill(os.getpid(), 9)
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    again = open_store(store_url)
    try:
        assert [e["text"] for e in again.events()] == ["committed", "own commit"]
        assert [d["device_id"] for d in again.list_devices()] == []
    finally:
        again.close()


def test_an_ack_recorded_before_mark_sent_keeps_its_final_state(store):
    inst = {"dev": "d", "id": "i1", "seq": 1, "iat": 10, "ttl_s": 60, "full": True, "ops": []}
    store.add_instruction(inst, 1, "lab", 10.0, 70.0)
    assert store.finish("i1", SUCCEEDED, 10.2, "", {"id": "i1", "status": "applied"}, "d") is not None
    store.mark_sent_many([("i1", 11.5)], 10.1)
    row = store.get_instruction("i1")
    assert (row["state"], row["sent_at"], row["attempts"], row["next_attempt_at"]) == (SUCCEEDED, 10.1, 1, None)
    store.add_instruction(dict(inst, id="i2", seq=2), 1, "lab", 12.0, 70.0)
    store.mark_sent_many([("i2", 13.0)], 12.1)
    assert store.get_instruction("i2")["state"] == IN_PROGRESS


class Msg:
    def __init__(self, device_id, kind, obj):
        self.topic, self.payload = wire.topic(device_id, kind), cbor2.dumps(obj)
        self.qos, self.mid, self.retain = 0, 0, False


def test_one_bad_message_in_a_batch_costs_only_itself(store, keystore):
    for d in ("a", "b", "c"):
        keystore.provision(d)
    svc = ProviderService("127.0.0.1", 1, keystore, minimal_baseline, fleet=Fleet(store))   # not started
    birth = {"v": 1, "dev": "b", "board": "simulated", "runtime": "cpython", "caps": {}, "last_seq": 2 ** 70}
    svc.handle_messages([Msg("a", "qos", {"v": 1, "dev": "a", "classes": NEEDS}),
                         Msg("b", "birth", birth),          # a sequence number no database column holds
                         Msg("c", "qos", {"v": 1, "dev": "c", "classes": NEEDS}),
                         Msg("c", "ack", {"v": 1, "dev": "c", "id": "unknown", "status": "applied"})])
    assert store.get_device("a")["needs"]["classes"] == NEEDS
    assert store.get_device("c")["needs"]["classes"] == NEEDS
    assert store.get_device("c")["pending"] & WORK_CHECK         # the ack asked for a check
    assert store.get_device("b") is None or not store.get_device("b")["online"]
    assert any("b" in text for _, text in svc.fleet.errors)      # the bad one is reported
    assert [(e["device_id"], e["kind"]) for e in store.events() if e["kind"] == "ack"] == [("c", "ack")]


def test_finish_closes_only_an_open_instruction_of_that_device(store):
    inst = {"dev": "d", "id": "i1", "seq": 1, "iat": 10, "ttl_s": 60, "full": True, "ops": []}
    store.add_instruction(inst, 1, "lab", 10.0, 70.0)
    assert store.finish("i1", SUCCEEDED, 11.0, "", {"id": "i1"}, "someone-else") is None
    assert store.finish("nope", SUCCEEDED, 11.0, "", {"id": "nope"}, "d") is None
    before = store.finish("i1", SUCCEEDED, 12.0, "", {"id": "i1"}, "d")
    assert before["state"] == "QUEUED" and before["ack"] is None        # the row as it was
    assert store.finish("i1", SUCCEEDED, 13.0, "", {"id": "i1"}) is None
    row = store.get_instruction("i1")
    assert (row["state"], row["acked_at"], row["ack"]) == (SUCCEEDED, 12.0, {"id": "i1"})
    assert store.record_needs("n", {"v": 1, "classes": NEEDS}, 1.0) is None
    assert store.record_needs("n", {"v": 1, "classes": {}}, 2.0) == {"v": 1, "classes": NEEDS}
