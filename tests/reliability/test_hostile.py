"""Hostile instructions against a running device agent (CPython, plus one
MicroPython case): each is rejected with a reason in the ack, counted in the
device's state (`rejected` by kind), changes nothing (sequence number and
persisted profile stay), and the device still takes a genuine instruction
afterwards. Secrets never reach the logs.

The broker's TLS + ACL confinement of a client that tries other devices'
topics is covered by tests/tools/test_broker_deploy.py."""

import os
import time

import pytest

from capshard.broker import Mosquitto

from harness import Device, Watcher, baseline, send_and_ack, wait_online


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    broker = Mosquitto()
    broker.start()
    watcher = Watcher(broker.host, broker.port)
    dev = Device("hostile-cpy", str(tmp_path_factory.mktemp("hostile") / "dev"), broker).start()
    try:
        wait_online(watcher, dev)
        ack = send_and_ack(watcher, dev, dev.sign(dev.payload([baseline()])))
        assert ack["status"] == "applied", ack
        assert watcher.wait(lambda: [x for x in watcher.since(0, dev.id, "state") if x.get("seq") == dev.seq], 20)
        yield broker, watcher, dev
    finally:
        dev.stop()
        watcher.close()
        broker.cleanup()


def nested(depth):
    v = 0
    for _ in range(depth):
        v = [v]
    return v


def _cases(dev):
    """name -> (raw message, expected reason fragment, rejection kind)."""
    good = dev.payload([baseline(cpu=33)], seq=dev.seq + 1)
    return {
        "forged-mac": (dev.sign(good, key=b"\x00" * 32), "MAC mismatch", "auth"),
        "wrong-kid": (dev.sign(good, kid=b"someone-else#1"), "authentication failed", "auth"),
        "replayed-seq": (dev.sign(dev.payload([baseline(cpu=34)], seq=dev.seq)), "replayed sequence", "replay"),
        "expired": (dev.sign(dev.payload([baseline(cpu=35)], seq=dev.seq + 1, iat=time.time() - 3600,
                                         ttl_s=30)), "expired", "expired"),
        "other-device": (dev.sign(dict(good, dev="hostile-other")), "another device", "misaddressed"),
        "oversize": (dev.sign(dev.payload([baseline(cpu=36, ver="x" * 4200)], seq=dev.seq + 1)),
                     "larger than 4096", "oversize"),
        "deep-cbor": (dev.sign(dict(good, pad=nested(40))), "nesting too deep", "malformed"),
        "path-shard": (dev.sign(dev.payload([baseline(shard="../../etc/passwd")], seq=dev.seq + 1)),
                       "invalid shard id", "schema"),
        "path-module": (dev.sign(dev.payload([baseline(module="capdev.shards/../../x")], seq=dev.seq + 1)),
                        "invalid module name", "schema"),
    }


CASES = ["forged-mac", "wrong-kid", "replayed-seq", "expired", "other-device", "oversize", "deep-cbor",
         "path-shard", "path-module"]


def _genuine_after(watcher, dev, before_state):
    """A genuine instruction is applied and the state shows the count."""
    mark = watcher.mark()
    cpu = 10 + dev.seq % 50
    payload = dev.payload([baseline(cpu=cpu)])
    ack = send_and_ack(watcher, dev, dev.sign(payload), inst_id=payload["id"])
    assert ack["status"] == "applied", ack
    state = watcher.wait(lambda: [s for s in watcher.since(mark, dev.id, "state") if s.get("seq") == payload["seq"]],
                         20)
    assert state, dev.log()[-2000:]
    assert state[-1]["profile"]["null-cipher"]["cpu"] == cpu
    return state[-1]


@pytest.mark.parametrize("case", CASES)
def test_hostile_instruction_is_rejected_counted_and_harmless(rig, case):
    broker, watcher, dev = rig
    before = dev.persisted()
    state_before = watcher.since(0, dev.id, "state")[-1]
    raw, reason, kind = _cases(dev)[case]
    mark = watcher.mark()
    ack = send_and_ack(watcher, dev, raw)
    assert ack["status"] == "rejected" and reason in ack["reason"], ack
    assert ack["results"] == []
    time.sleep(0.2)
    # Nothing changed: any state published since has the same seq and profile, nothing persisted.
    for st in watcher.since(mark, dev.id, "state"):
        assert (st["seq"], st["profile"]) == (state_before["seq"], state_before["profile"])
    assert dev.persisted() == before
    after = _genuine_after(watcher, dev, state_before)
    counted = state_before.get("rejected", {}).get(kind, 0)
    assert after["rejected"][kind] == counted + 1, after["rejected"]
    assert dev.proc.poll() is None


def test_flood_of_200_forged_instructions(rig):
    broker, watcher, dev = rig
    state_before = watcher.since(0, dev.id, "state")[-1]
    before = dev.persisted()
    mark = watcher.mark()
    flood = 200
    for i in range(flood):
        p = dev.payload([baseline(cpu=1 + i % 100)], seq=dev.seq + 1 + i, inst_id=f"flood-{i}")
        watcher.c.publish(dev.topic, dev.sign(p, key=b"\x01" * 32), qos=1)
    acks = watcher.wait(lambda: len(watcher.since(mark, dev.id, "ack")) >= flood and
                        watcher.since(mark, dev.id, "ack"), 60)
    assert acks and len(acks) == flood, (len(acks or []), dev.log()[-2000:])
    assert all(a["status"] == "rejected" and "authentication failed" in a["reason"] for a in acks)
    assert dev.persisted() == before
    after = _genuine_after(watcher, dev, state_before)
    assert after["rejected"]["auth"] == state_before.get("rejected", {}).get("auth", 0) + flood


def test_secrets_never_in_logs(rig):
    broker, watcher, dev = rig
    log = dev.log()
    assert "instruction rejected" in log  # the log is the one that saw the hostile traffic
    assert dev.key.hex() not in log and dev.key.hex().upper() not in log
    with open(broker.log_path, errors="replace") as f:
        assert dev.key.hex() not in f.read()


def test_micropython_device_rejects_forgery_and_path_shard(tmp_path, broker):
    watcher = Watcher(broker.host, broker.port)
    dev = Device("hostile-mpy", str(tmp_path / "mpy"), broker, runtime="micropython").start()
    try:
        wait_online(watcher, dev)
        assert send_and_ack(watcher, dev, dev.sign(dev.payload([baseline()])))["status"] == "applied"
        assert watcher.wait(lambda: [x for x in watcher.since(0, dev.id, "state") if x.get("seq") == dev.seq], 20)
        state_before = watcher.since(0, dev.id, "state")[-1]
        before = dev.persisted()
        for case in ("forged-mac", "path-shard", "deep-cbor", "replayed-seq"):
            raw, reason, kind = _cases(dev)[case]
            ack = send_and_ack(watcher, dev, raw)
            assert ack["status"] == "rejected" and reason in ack["reason"], (case, ack)
        assert dev.persisted() == before
        after = _genuine_after(watcher, dev, state_before)
        assert after["rejected"] == {"auth": 1, "schema": 1, "malformed": 1, "replay": 1}
        assert dev.key.hex() not in dev.log()
    finally:
        dev.stop()
        watcher.close()
