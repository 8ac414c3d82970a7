"""The store's cheaper paths keep their meaning: migration 3 moves the
pending reconciliation work out of the devices rows into device_work (work
asked for before the upgrade is still there after it), and a desired-state
write takes the next instruction sequence number in the same statement."""

import pytest

from capshard.service import migrations
from capshard.service.store import WORK_CHECK, WORK_REPLAN, WORK_SYNC, StaleWrite, open_store


def _store_at_version_2(store_url, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(migrations, "MIGRATIONS", [x for x in migrations.MIGRATIONS if x[0] <= 2])
        m.setattr(migrations, "LATEST", 2)
        return open_store(store_url)


def test_pending_work_carries_over_to_the_work_table(store_url, monkeypatch):
    old = _store_at_version_2(store_url, monkeypatch)
    try:
        with old.tx() as cur:
            for device_id, online, pending, after in (("on", 1, WORK_CHECK | WORK_SYNC, 20.0),
                                                      ("off", 0, WORK_REPLAN, 30.0),
                                                      ("idle", 1, 0, None)):
                cur.execute("INSERT INTO devices (device_id, online, pending, pending_after) VALUES (?, ?, ?, ?)",
                            (device_id, online, pending, after))
    finally:
        old.close()

    store = open_store(store_url, migrate=False)
    try:
        assert store.migrate() == [3]
        assert store.schema_version() == migrations.LATEST
        (due,) = store.due_work(100.0)
        assert (due["device_id"], due["pending"], due["pending_after"]) == ("on", WORK_CHECK | WORK_SYNC, 20.0)
        off = store.get_device("off")
        assert (off["pending"], off["pending_after"]) == (WORK_REPLAN, 30.0)
        idle = store.get_device("idle")
        assert (idle["pending"], idle["pending_after"]) == (0, None)
        assert store.claim_work("on", due["pending"], due["pending_after"])
        assert store.due_work(100.0) == [] and store.get_device("on")["pending"] == 0
    finally:
        store.close()


def test_desired_write_takes_the_next_sequence_number_unless_stale(store):
    assert store.next_seq("d") == 1
    assert store.write_desired_next_seq("d", {"a": {"cpu": 1}}, 0, 10.0, 99.0, ["why"]) == (1, 2)
    with pytest.raises(StaleWrite):
        store.write_desired_next_seq("d", {"b": {}}, 0, 11.0)
    row = store.get_device("d")
    assert (row["desired"], row["desired_version"], row["desired_expires_at"], row["explanations"]) == \
        ({"a": {"cpu": 1}}, 1, 99.0, ["why"])
    assert store.next_seq("d") == 3                  # the stale write took none
    assert store.write_desired_next_seq("new", {}, 0, 12.0) == (1, 1)   # a device not seen before
