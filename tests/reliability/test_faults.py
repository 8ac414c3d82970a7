"""Faults injected for real (kill -9, clock skew, provider loss), then
recovery asserted. Bounds stated per test: CONVERGE_S for a device to come
back and take a genuine instruction after the fault is lifted."""

import os
import subprocess
import sys
import time

import pytest

from capshard import fwrun
from capshard.broker import Mosquitto

from harness import Device, Watcher, baseline, lease_op, send_and_ack, wait_online

CONVERGE_S = 20  # MQTT reconnect backoff is capped well below this


@pytest.fixture
def rig(tmp_path):
    broker = Mosquitto()
    broker.start()
    watcher = Watcher(broker.host, broker.port)
    devices = []

    def device(name, **kw):
        d = Device(name, str(tmp_path / name), broker, **kw)
        devices.append(d)
        return d

    yield broker, watcher, device
    for d in devices:
        d.stop()
    watcher.close()
    broker.cleanup()


def _apply(watcher, dev, ops, full=True, timeout=CONVERGE_S):
    p = dev.payload(ops, full=full)
    ack = send_and_ack(watcher, dev, dev.sign(p), timeout=timeout, inst_id=p["id"])
    assert ack["status"] == "applied", ack
    return p, ack


def _latest_state(watcher, dev, mark=0):
    states = watcher.since(mark, dev.id, "state")
    return states[-1] if states else None


def test_broker_kill9_lease_lapses_to_baseline_then_device_converges(rig):
    """kill -9 of mosquitto while a 3 s lease runs: the device falls back to its
    baseline on its own, and within CONVERGE_S of the broker's restart (same
    port) it is back online, reports the baseline and applies a new instruction."""
    broker, watcher, device = rig
    dev = device("fault-broker").start()
    wait_online(watcher, dev)
    _apply(watcher, dev, [baseline(), lease_op(dur_s=3)])
    assert set(dev.persisted()["profile"]) == {"null-cipher", "counter"}
    watcher.close()
    broker.kill()
    time.sleep(5)  # the lease (3 s) lapses while the broker is gone
    broker.restart()
    t0 = time.monotonic()
    watcher = Watcher(broker.host, broker.port)
    try:
        state = watcher.wait(lambda: [s for s in watcher.since(0, dev.id, "state")
                                      if s.get("online") and set(s["profile"]) == {"null-cipher"}], CONVERGE_S)
        assert state, (watcher.since(0, dev.id, "state"), dev.log()[-3000:])
        assert set(dev.persisted()["profile"]) == {"null-cipher"}
        _apply(watcher, dev, [baseline(cpu=42)], timeout=CONVERGE_S)
        assert time.monotonic() - t0 < CONVERGE_S
        assert dev.persisted()["profile"]["null-cipher"]["cpu"] == 42
    finally:
        watcher.close()


@pytest.mark.parametrize("delay_s", [0.0, 0.03, 0.1])
def test_device_kill9_mid_instruction_applies_it_once_and_loses_no_ack(rig, delay_s):
    """kill -9 of the device right after (or while) it receives an instruction,
    at several delays so the kill lands before, during and after the persisted
    write. After a restart the provider redelivers the same instruction: it is
    applied at most once (every ack for that seq carries the same id and the
    cached ack is re-sent), and an ack arrives (no ack lost)."""
    broker, watcher, device = rig
    dev = device(f"fault-dev-{int(delay_s * 1000)}").start()
    wait_online(watcher, dev)
    _apply(watcher, dev, [baseline()])
    p = dev.payload([baseline(cpu=77), lease_op(dur_s=0)])
    raw = dev.sign(p)
    watcher.publish(dev.topic, raw)
    time.sleep(delay_s)
    dev.kill9()
    persisted = dev.persisted()  # the write is atomic: old or new, never torn
    assert persisted["last_seq"] in (p["seq"] - 1, p["seq"])
    mark = watcher.mark()
    dev.start()
    wait_online(watcher, dev, mark=mark)
    ack = send_and_ack(watcher, dev, raw, timeout=CONVERGE_S, inst_id=p["id"])  # the provider's redelivery
    assert ack["status"] == "applied", ack
    acks = [a for a in watcher.since(0, dev.id, "ack") if a.get("seq") == p["seq"]]
    assert {a["id"] for a in acks} == {p["id"]}
    assert all(a == acks[0] for a in acks), acks  # a repeat is the cached ack, not a second run
    persisted = dev.persisted()
    assert persisted["last_seq"] == p["seq"] and persisted["profile"]["null-cipher"]["cpu"] == 77
    assert "duplicate instruction" in dev.log() or len(acks) == 1


def test_device_clock_skewed_by_hours_still_takes_instructions(rig):
    """The device's wall clock is 6 hours behind: expiry uses the provider's
    issue times, so a fresh instruction is applied and an old one is refused."""
    broker, watcher, device = rig
    dev = device("fault-skew")
    env = dict(os.environ, CAPSHARD_TEST_CLOCK_SKEW_S=str(-6 * 3600))
    env["PYTHONPATH"] = fwrun.FIRMWARE_DIR if hasattr(fwrun, "FIRMWARE_DIR") else ""
    from capshard.paths import FIRMWARE_DIR
    env["PYTHONPATH"] = str(FIRMWARE_DIR)
    log = open(os.path.join(dev.dir, "agent.log"), "ab")
    runner = os.path.join(os.path.dirname(__file__), "skewed_agent.py")
    dev.proc = subprocess.Popen([sys.executable, runner, os.path.join(dev.dir, "board.json"),
                                 os.path.join(dev.dir, "device.json"), dev.dir],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    dev.proc.log_path = log.name
    log.close()
    wait_online(watcher, dev)
    birth = watcher.since(0, dev.id, "health")
    _apply(watcher, dev, [baseline()])
    _apply(watcher, dev, [baseline(cpu=50)])
    stale = dev.payload([baseline(cpu=51)], iat=time.time() - 600, ttl_s=60)
    ack = send_and_ack(watcher, dev, dev.sign(stale), inst_id=stale["id"])
    assert ack["status"] == "rejected" and "expired" in ack["reason"], ack
    health = watcher.wait(lambda: watcher.since(0, dev.id, "health"), 40)
    assert health and abs(health[-1]["t"] - (time.time() - 6 * 3600)) < 120  # the skew is real
    del birth
