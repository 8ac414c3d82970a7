"""Network partitions between a device and the broker, made for real with a
TCP proxy the test controls (tests/reliability/proxy.py): a half-open link
(blackhole), connection resets, a lease that lapses while the device is cut
off. A real CPython agent talks to the broker only through the proxy; the
real provider service (in this process) drives it; a watcher on the broker
itself sees every ack and state.

Bounds asserted (device keepalive 5 s, the minimum a board may set):
- DEAD_S: a blackholed device declares the broker dead and drops the link
  within keepalive + 2 s.
- RECOVER_S: within 20 s of the link healing the device is back online and
  runs the desired state (the proxy resets the broken connections when it
  heals; then backoff, at most one CONNECT timeout of 5 s, one sync).
After each test: no instruction is applied twice (one "applied" per id in the
device log, every ack for an id identical) and no ack is lost (the newest
instruction is SUCCEEDED and every other one SUCCEEDED or superseded)."""

import collections
import re
import sys
import threading
import time
import traceback

import pytest

from capshard.broker import Mosquitto
from capshard.keys import Keystore
from capshard.service.fleet import profiles_match
from capshard.service.policy import MINIMAL_BASELINE, minimal_baseline
from capshard.service.provider import ProviderService
from capshard.service.reconcile import ReconcileOptions

from harness import Device, Watcher
from polling import wait_until
from proxy import TcpProxy

KEEPALIVE_S = 5  # the board schema's minimum
DEAD_S = KEEPALIVE_S + 2
RECOVER_S = 20
SETTLE_S = 1.0  # > the provider's birth jitter (0.25 s) + a reconciler pass
PROBE = {"op": "activate", "shard": "counter", "ver": "1.0", "slot": "test.counter",
         "module": "capdev.shards.counter", "cpu": 5, "mem_kb": 4, "bw_kbps": 0,
         "prio": "low", "dur_s": 3, "alt": None}


class Rig:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.broker = Mosquitto().start()
        self.proxy = TcpProxy(self.broker.host, self.broker.port).start()
        self.keystore = Keystore()
        self.watcher = Watcher(self.broker.host, self.broker.port)
        # renew_before_s < 0: a lapsed lease is re-planned (to the baseline) after it lapsed
        self.svc = ProviderService(self.broker.host, self.broker.port, self.keystore, minimal_baseline,
                                   options=ReconcileOptions(check_delay_s=0.2, renew_before_s=-1,
                                                            retry_base_s=0.5, retry_max_s=2)).start()
        self.devices = []

    def device(self, name):
        board = {"broker": {"host": self.proxy.host, "port": self.proxy.port, "tls": False,
                            "keepalive_s": KEEPALIVE_S}}
        d = Device(name, str(self.tmp / name), self.proxy, keystore=self.keystore, board_overrides=board)
        self.devices.append(d)
        return d.start()

    def converged(self, dev, timeout, shards=None):
        def ok(f):
            r = f.device(dev.id)
            return r and r.online and r.reported and profiles_match(r.desired, r.reported) and \
                (shards is None or set(r.reported) == shards) and r
        rec = self.svc.fleet.wait_until(ok, timeout)
        assert rec, (self.svc.fleet.device(dev.id), dev.log()[-3000:])
        return rec

    def close(self):
        for d in self.devices:
            d.stop()
        self.svc.stop()
        self.watcher.close()
        self.proxy.stop()
        self.broker.cleanup()


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


wait = wait_until


def assert_once_and_acked(rig, dev):
    """No instruction applied twice, no ack lost (once the provider's retries
    and syncs have settled, within RECOVER_S)."""
    def settled_once():
        rec = rig.svc.fleet.device(dev.id)
        rows = rig.svc.store.instructions(dev.id)
        return rec is not None and rec.pending == 0 and rows and rows[-1]["state"] == "SUCCEEDED" and \
            all(r["state"] == "SUCCEEDED" or r["superseded_by"] for r in rows)
    def settled():
        # Settled for longer than a birth's jittered sync takes to be planned
        # and written: a device that converged on reconnecting still gets that
        # sync, and a snapshot taken between its claim and its write (or its
        # send and its ack) would show it open.
        end = time.monotonic() + SETTLE_S
        while time.monotonic() < end:
            if not settled_once():
                return False
            time.sleep(0.05)
        return True
    wait(settled, RECOVER_S)
    # The watcher is a subscriber of its own: an ack the provider recorded may reach it a moment later.
    def watcher_saw_acks():
        seen = {a["id"] for a in rig.watcher.since(0, dev.id, "ack")}
        return all(r["id"] in seen for r in rig.svc.store.instructions(dev.id) if r["state"] == "SUCCEEDED")
    wait(watcher_saw_acks, 5)
    applied = collections.Counter(re.findall(r"applied instruction (\S+) seq", dev.log()))
    assert applied and max(applied.values()) == 1, applied
    by_id = collections.defaultdict(list)
    for ack in rig.watcher.since(0, dev.id, "ack"):
        by_id[ack["id"]].append(ack)
    for acks in by_id.values():
        assert all(a == acks[0] for a in acks), acks  # a repeat is the cached ack, not a second run
    rows = rig.svc.store.instructions(dev.id)
    assert rows[-1]["state"] == "SUCCEEDED", _diagnosis(rig, dev, rows)
    for row in rows:
        assert row["state"] == "SUCCEEDED" or row["superseded_by"], _diagnosis(rig, dev, rows)
        if row["state"] == "SUCCEEDED":
            assert row["id"] in by_id, _diagnosis(rig, dev, rows)  # the provider's record is the device's ack
    return rows


def _diagnosis(rig, dev, rows):
    """What the provider recorded and what went over the broker, for a failure message."""
    t0 = rig.watcher.msgs[0][0] if rig.watcher.msgs else 0
    def brief(kind, m):
        if not isinstance(m, dict):
            return "(signed)" if kind == "inst" else m
        keys = {"state": ("online", "seq"), "ack": ("id", "status"), "birth": ("last_seq",)}.get(kind, ())
        return {k: m.get(k) for k in keys}
    lines = ["instructions (id, seq, state, attempts, superseded_by, next_attempt_at, deadline):"]
    lines += [f"  {r['id']} {r['seq']} {r['state']} {r['attempts']} {r['superseded_by']} "
              f"{r['next_attempt_at']} {r['deadline']}" for r in rows]
    lines.append(f"device record: {rig.svc.fleet.device(dev.id)}")
    lines.append("broker messages (s since the first, kind, fields):")
    lines += [f"  {t - t0:7.3f} {k} {brief(k, m)}" for t, d, k, m in rig.watcher.msgs if d == dev.id]
    lines.append("provider events:")
    lines += [f"  {e['t']:.3f} {e['kind']} {e['text']}" for e in rig.svc.store.events(device_id=dev.id)]
    # Where the provider's threads are: a reconciler that never retried shows here.
    frames = sys._current_frames()
    for t in threading.enumerate():
        if t.name.startswith(("capshard-", "paho-")) and t.ident in frames:
            lines.append(f"thread {t.name}:\n" + "".join(traceback.format_stack(frames[t.ident])))
    lines.append("device log (end):")
    lines.append(dev.log()[-3000:])
    return "\n".join(lines)


def test_half_open_link_device_declares_broker_dead_and_converges_to_new_desired(rig):
    """Blackhole longer than the keepalive: the device's own keepalive finds the
    broker dead (it closes the link within DEAD_S; the broker's close is hidden
    from it). A desired-state change made during the partition arrives after
    the link heals, within RECOVER_S."""
    dev = rig.device("part-half-open")
    rig.converged(dev, RECOVER_S)
    connects = dev.log().count("connected to ")
    rig.proxy.blackhole()
    t_cut = time.monotonic()
    rig.svc.set_desired(dev.id, [dict(MINIMAL_BASELINE[0], cpu=33)], why="changed during partition")
    assert wait(lambda: rig.proxy.stats["client_closed"] >= 1, DEAD_S), (rig.proxy.stats, dev.log()[-2000:])
    dead_after = time.monotonic() - t_cut
    # hold the partition past the keepalive, whatever the ping phase was
    time.sleep(max(0.0, KEEPALIVE_S + 0.5 - dead_after))
    assert rig.svc.fleet.device(dev.id).reported["null-cipher"]["cpu"] != 33  # nothing got through
    rig.proxy.forward()
    t_heal = time.monotonic()
    rec = rig.converged(dev, RECOVER_S)
    assert rec.reported["null-cipher"]["cpu"] == 33
    assert time.monotonic() - t_heal < RECOVER_S
    assert dev.log().count("connected to ") > connects
    assert dev.persisted()["profile"]["null-cipher"]["cpu"] == 33
    assert_once_and_acked(rig, dev)


def test_reset_storm_device_reconnects_with_backoff_and_converges(rig):
    """Every connection is reset five times a second for 3 s: the device keeps
    at least 1 s between its attempts (at most 3 s / 1 s + 2 connections) and
    converges to what was set meanwhile within RECOVER_S of the last reset."""
    dev = rig.device("part-reset")
    rig.converged(dev, RECOVER_S)
    before = rig.proxy.stats["accepted"]
    rig.proxy.reset()
    rig.svc.set_desired(dev.id, [dict(MINIMAL_BASELINE[0], cpu=21)], why="changed during resets")
    end = time.monotonic() + 3
    while time.monotonic() < end:
        time.sleep(0.2)
        rig.proxy.reset()
    attempts = rig.proxy.stats["accepted"] - before
    assert 1 <= attempts <= 5, rig.proxy.stats
    t_heal = time.monotonic()
    rec = rig.converged(dev, RECOVER_S)
    assert rec.reported["null-cipher"]["cpu"] == 21 and time.monotonic() - t_heal < RECOVER_S
    assert_once_and_acked(rig, dev)


def test_lease_lapses_during_partition_device_falls_back_and_reports_it_after(rig):
    """A 3 s lease is running when the link goes half-open for 6 s: the device
    drops the leased shard on its own, and the first state it publishes when
    the link heals (before any new instruction) shows only the baseline. Then
    it converges with the provider's re-plan (the baseline) within RECOVER_S."""
    dev = rig.device("part-lease")
    rig.converged(dev, RECOVER_S)
    rig.svc.set_desired(dev.id, MINIMAL_BASELINE + [PROBE], expires_at=time.time() + 3, why="short lease")
    rig.converged(dev, RECOVER_S, shards={"null-cipher", "counter"})
    rig.proxy.blackhole()
    t_cut = time.monotonic()
    assert wait(lambda: rig.proxy.stats["client_closed"] >= 1, DEAD_S), rig.proxy.stats
    time.sleep(max(0.0, 6 - (time.monotonic() - t_cut)))
    mark = rig.watcher.mark()
    rig.proxy.forward()
    def after_birth():
        seen = [(k, m) for _, d, k, m in rig.watcher.msgs[mark:] if d == dev.id and isinstance(m, dict)]
        kinds = [k for k, _ in seen]
        if "birth" in kinds and "state" in kinds[kinds.index("birth"):]:
            return seen
    seen = wait(after_birth, RECOVER_S)
    assert seen, dev.log()[-3000:]
    # Retransmitted first (QoS 1: their PUBACKs were lost in the blackhole): what
    # was published before and during the partition, the lapse among it.
    fallbacks = [e for k, m in seen if k == "health" for e in m.get("events", []) if e.get("ev") == "fallback"]
    assert fallbacks and "lease expired" in fallbacks[0]["reason"], seen
    born = [k for k, _ in seen].index("birth")
    first_state = next(m for k, m in seen[born:] if k == "state")
    assert set(first_state["profile"]) == {"null-cipher"}, first_state  # before any new instruction:
    assert "ack" not in [k for k, _ in seen[:born]]                     # it fell back on its own
    rec = rig.converged(dev, RECOVER_S, shards={"null-cipher"})
    assert "counter" not in rec.desired
    assert set(dev.persisted()["profile"]) == {"null-cipher"}
    assert_once_and_acked(rig, dev)


def test_slow_link_delay_instruction_still_applied_once_and_acked(rig):
    """Every chunk through the proxy held 300 ms (a slow, long link): the
    change still arrives, is applied once and acked, within RECOVER_S, and
    not faster than the delay allows (one chunk in, one out: >= 0.6 s)."""
    dev = rig.device("part-delay")
    rig.converged(dev, RECOVER_S)
    rig.proxy.delay(300)
    t0 = time.monotonic()
    rig.svc.set_desired(dev.id, [dict(MINIMAL_BASELINE[0], cpu=44)], why="over a slow link")
    rec = rig.converged(dev, RECOVER_S)
    took = time.monotonic() - t0
    assert rec.reported["null-cipher"]["cpu"] == 44 and 0.6 <= took < RECOVER_S, took
    rig.proxy.forward()
    assert_once_and_acked(rig, dev)
