"""The fleet store, run against SQLite and a real PostgreSQL server: schema
migrations, optimistic concurrency on the desired state, the instruction
log's states and the work queue."""

import threading

import pytest

from capshard.service import migrations
from capshard.service.store import (FAILED, IN_PROGRESS, QUEUED, SUCCEEDED, WORK_CHECK, WORK_REPLAN, WORK_SYNC,
                                    StaleWrite, StoreError, open_store)

OP = {"op": "activate", "shard": "null-cipher", "ver": "1.0.0", "slot": "vpn.cipher", "cpu": 2, "mem_kb": 4,
      "bw_kbps": 0, "prio": "high", "dur_s": 0, "alt": None, "module": "capdev.shards.null_cipher"}


def test_migrations_run_once_and_record_the_schema_version(store, store_url):
    assert store.schema_version() == migrations.LATEST
    assert store.migrate() == []           # nothing left to apply
    again = open_store(store_url)          # a second provider on the same store
    assert again.migrate() == [] and again.schema_version() == migrations.LATEST
    again.close()


def test_a_store_newer_than_the_code_is_refused(store, store_url):
    with store.tx() as cur:
        cur.execute("INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                    (migrations.LATEST + 1, "from the future", 0.0))
    with pytest.raises(StoreError, match="newer than this capshard"):
        open_store(store_url)


def test_stale_desired_write_is_refused_and_a_reread_write_succeeds(store, store_url):
    other = open_store(store_url)   # another provider process sharing the fleet
    try:
        v1 = store.write_desired("dev-1", {"null-cipher": OP}, 0, 100.0)
        assert v1 == 1
        seen_by_other = other.get_device("dev-1")["desired_version"]
        store.write_desired("dev-1", {}, v1, 101.0)           # we move on to v2
        with pytest.raises(StaleWrite) as err:
            other.write_desired("dev-1", {"null-cipher": dict(OP, cpu=9)}, seen_by_other, 102.0)
        assert (err.value.expected, err.value.actual) == (1, 2)
        assert store.get_device("dev-1")["desired"] == {}      # the stale write changed nothing
        fresh = other.get_device("dev-1")["desired_version"]
        assert other.write_desired("dev-1", {"null-cipher": dict(OP, cpu=9)}, fresh, 103.0) == 3
        row = store.get_device("dev-1")
        assert row["desired"]["null-cipher"]["cpu"] == 9 and row["desired_version"] == 3
    finally:
        other.close()


def test_concurrent_writers_lose_no_update_and_versions_only_go_up(store, store_url):
    """Four writers, each on its own connection, add their own shard 5 times
    by read-modify-write, retrying on StaleWrite."""
    store.write_desired("dev-c", {}, 0, 0.0)
    stale = []

    def writer(name):
        s = open_store(store_url, migrate=False)
        try:
            for i in range(5):
                while True:
                    row = s.get_device("dev-c")
                    profile = dict(row["desired"], **{f"{name}-{i}": dict(OP, shard=f"{name}-{i}")})
                    try:
                        s.write_desired("dev-c", profile, row["desired_version"], 1.0)
                        break
                    except StaleWrite:
                        stale.append(name)
        finally:
            s.close()

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    row = store.get_device("dev-c")
    assert len(row["desired"]) == 20                      # nobody's shard was lost
    assert row["desired_version"] == 21                   # one version per accepted write


def test_sequence_numbers_never_fall_behind_the_device(store):
    assert [store.next_seq("d") for _ in range(3)] == [1, 2, 3]
    store.record_birth("d", {"board": "simulated", "runtime": "cpython", "last_seq": 40, "caps": {}}, 5.0)
    assert store.next_seq("d") == 41
    store.record_birth("d", {"board": "simulated", "runtime": "cpython", "last_seq": 7, "caps": {}}, 6.0)
    assert store.next_seq("d") == 42


def test_instruction_log_states_and_the_first_ack_wins(store):
    inst = {"dev": "d", "id": "i1", "seq": 1, "iat": 10, "ttl_s": 60, "full": True, "ops": [OP]}
    store.add_instruction(inst, 1, "lab", 10.0, 70.0)
    assert store.get_instruction("i1")["state"] == QUEUED
    store.mark_sent("i1", 10.5, 11.5)
    row = store.get_instruction("i1")
    assert (row["state"], row["attempts"], row["sent_at"]) == (IN_PROGRESS, 1, 10.5)
    assert [r["id"] for r in store.due_retries(12.0)] == ["i1"]
    assert store.claim_retry("i1", 11.5, 14.0) and not store.claim_retry("i1", 11.5, 15.0)  # one claimer wins
    ack = {"id": "i1", "status": "applied", "results": [{"shard": "null-cipher", "op": "activate",
                                                         "code": "activated", "reason": ""}]}
    assert store.finish("i1", SUCCEEDED, 13.0, "", ack, "d") is not None
    assert store.finish("i1", FAILED, 14.0, "late duplicate", ack, "d") is None   # closed stays closed
    row = store.get_instruction("i1")
    assert (row["state"], row["acked_at"], row["ops"]) == (SUCCEEDED, 13.0, [OP])
    assert store.outcome_counts() == {SUCCEEDED: 1}


def test_work_bits_accumulate_and_are_claimed_once(store):
    store.set_online("d", True, 0.0)
    store.request_work("d", WORK_CHECK, 50.0)
    store.request_work("d", WORK_SYNC, 20.0)      # earlier wins
    store.request_work("d", WORK_REPLAN, 90.0)
    assert store.due_work(10.0) == []
    (w,) = store.due_work(20.0)
    assert w["pending"] == WORK_CHECK | WORK_SYNC | WORK_REPLAN and w["pending_after"] == 20.0
    assert store.claim_work("d", w["pending"], w["pending_after"])
    assert not store.claim_work("d", w["pending"], w["pending_after"])
    assert store.due_work(100.0) == []
    store.set_online("d", False, 1.0)
    store.request_work("d", WORK_SYNC, 0.0)
    assert store.due_work(100.0) == []             # offline: its birth will bring it up to date


def test_agreements_and_events(store):
    assert store.assign_agreement("d", "lab", 1.0, "test") is True
    assert store.assign_agreement("d", "lab", 2.0, "test") is False
    assert store.assign_agreement("d", "lean", 3.0, "test") is True
    assert store.agreement("d") == "lean" and store.get_device("d")["tier"] == "lean"
    store.add_event("d", "birth", "hello", 1.0)
    store.add_event(None, "error", "bad", 2.0)
    evs = store.events()
    assert [e["kind"] for e in evs] == ["birth", "error"]
    assert [e["text"] for e in store.events(after_id=evs[0]["id"])] == ["bad"]
