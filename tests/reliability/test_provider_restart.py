"""kill -9 of the provider service (`capshard dsa run` as its own process on a
SQLite fleet store), a desired-state change written to the store while it is
down, and a restart: the device converges to the new state and nothing is
lost. Bound asserted: CONVERGE_S from the restart (the service connects,
reads the retained states and the pending work, and sends one full state)."""

import collections
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from capshard.broker import Mosquitto
from capshard.keys import Keystore
from capshard.service.fleet import Fleet
from capshard.service.store import WORK_SYNC, open_store

from harness import Device, Watcher
from polling import wait_until

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "service", "data")
CONVERGE_S = 20
PROBE = {"op": "activate", "shard": "rt-probe", "ver": "1.0.0", "slot": "monitoring.probe", "cpu": 5, "mem_kb": 8,
         "bw_kbps": 100, "prio": "high", "dur_s": 0, "alt": None, "module": "capdev.shards.counter"}


def wait(predicate, timeout):
    return wait_until(predicate, timeout, 0.1)


@pytest.fixture
def rig(tmp_path):
    broker = Mosquitto().start()
    watcher = Watcher(broker.host, broker.port)
    keystore = Keystore()
    dev = Device("prov-restart", str(tmp_path / "dev"), broker, keystore=keystore)
    keystore.save(str(tmp_path / "keys.json"))
    (tmp_path / "dsa.toml").write_text(f"""
[broker]
host = "{broker.host}"
port = {broker.port}
[store]
url = "fleet.sqlite"
[keys]
keystore = "keys.json"
[allocator]
catalog = "{DATA}/catalog.toml"
agreements = "{DATA}/agreements.toml"
default_tier = "lab"
[reconcile]
check_delay_s = 0.2
""")
    procs = []

    def start_dsa():
        with open(tmp_path / f"dsa-{len(procs)}.log", "w") as log:
            p = subprocess.Popen([sys.executable, "-m", "capshard", "dsa", "run", str(tmp_path / "dsa.toml")],
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(p)
        return p

    store = open_store(str(tmp_path / "fleet.sqlite"))
    yield broker, watcher, dev, start_dsa, Fleet(store), tmp_path
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(10)
    dev.stop()
    watcher.close()
    store.close()
    broker.cleanup()


def test_provider_kill9_desired_changed_while_down_restart_converges_nothing_lost(rig):
    broker, watcher, dev, start_dsa, fleet, tmp = rig
    dsa = start_dsa()
    dev.start()

    def converged(shards):
        r = fleet.device(dev.id)
        return r and r.online and r.reported and r.converged and set(r.reported) == shards and r

    assert wait(lambda: converged({"null-cipher"}), CONVERGE_S), (dev.log()[-2000:], (tmp / "dsa-0.log").read_text())
    os.killpg(dsa.pid, signal.SIGKILL)
    assert dsa.wait(5) == -signal.SIGKILL

    # While it is down, an operator tool changes the desired state in the
    # store and asks for a sync (what `capshard agreement assign` does for a tier).
    rec = fleet.device(dev.id)
    profile = dict(rec.desired)
    profile["null-cipher"] = dict(profile["null-cipher"], cpu=7)
    profile["rt-probe"] = PROBE
    now = time.time()
    fleet.store.write_desired(dev.id, profile, rec.desired_version, now, None, ["changed while the provider was down"])
    fleet.store.request_work(dev.id, WORK_SYNC, now)
    time.sleep(1)
    assert set(fleet.device(dev.id).reported) == {"null-cipher"}  # nobody sent it yet

    start_dsa()
    t0 = time.monotonic()
    rec = wait(lambda: converged({"null-cipher", "rt-probe"}), CONVERGE_S)
    assert rec, (dev.log()[-2000:], (tmp / "dsa-1.log").read_text())
    assert time.monotonic() - t0 < CONVERGE_S
    assert rec.reported["null-cipher"]["cpu"] == 7
    assert set(dev.persisted()["profile"]) == {"null-cipher", "rt-probe"}

    # Nothing lost: every instruction the provider recorded is acked SUCCEEDED
    # (or superseded by a newer full state), each applied once on the device.
    def settled():
        rows = fleet.store.instructions(dev.id)
        return rows and rows[-1]["state"] == "SUCCEEDED" and \
            all(r["state"] == "SUCCEEDED" or r["superseded_by"] for r in rows) and rows
    rows = wait(settled, CONVERGE_S)
    assert rows, fleet.store.instructions(dev.id)
    applied = collections.Counter(re.findall(r"applied instruction (\S+) seq", dev.log()))
    assert max(applied.values()) == 1, applied
    acked = {a["id"] for a in watcher.since(0, dev.id, "ack")}
    assert {r["id"] for r in rows if r["state"] == "SUCCEEDED"} <= acked
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(set(seqs))  # the restarted service went on from the stored sequence


def test_provider_kill9_with_ack_in_flight_ack_is_recovered_after_restart(rig):
    """The provider sends an instruction to a frozen device (SIGSTOP), is
    killed -9, then the device wakes, applies it and acks into the void (the
    provider's session is gone). After the restart the provider re-sends it
    (same id), the device answers with its cached ack without applying it
    again, and the instruction is SUCCEEDED within CONVERGE_S."""
    broker, watcher, dev, start_dsa, fleet, tmp = rig
    dsa = start_dsa()
    dev.start()
    assert wait(lambda: (r := fleet.device(dev.id)) and r.reported and r.converged, CONVERGE_S), dev.log()[-2000:]
    os.kill(dev.proc.pid, signal.SIGSTOP)
    try:
        rec = fleet.device(dev.id)
        profile = dict(rec.desired, **{"rt-probe": PROBE})
        fleet.store.write_desired(dev.id, profile, rec.desired_version, time.time(), None, ["probe"])
        fleet.store.request_work(dev.id, WORK_SYNC, time.time())
        sent = wait(lambda: [r for r in fleet.store.instructions(dev.id)
                             if r["sent_at"] and "rt-probe" in {o["shard"] for o in r["ops"]}], 10)
        assert sent, fleet.store.instructions(dev.id)
        inst_id = sent[0]["id"]
        os.killpg(dsa.pid, signal.SIGKILL)
        dsa.wait(5)
    finally:
        os.kill(dev.proc.pid, signal.SIGCONT)
    assert wait(lambda: f"applied instruction {inst_id}" in dev.log(), 10), dev.log()[-2000:]
    assert fleet.store.get_instruction(inst_id)["state"] != "SUCCEEDED"  # its ack went to nobody
    start_dsa()
    t0 = time.monotonic()
    done = wait(lambda: fleet.store.get_instruction(inst_id)["state"] == "SUCCEEDED", CONVERGE_S)
    assert done, (fleet.store.get_instruction(inst_id), (tmp / "dsa-1.log").read_text(), dev.log()[-2000:])
    assert time.monotonic() - t0 < CONVERGE_S
    assert dev.log().count(f"applied instruction {inst_id}") == 1
    assert f"duplicate instruction {inst_id}" in dev.log()
    acks = [a for a in watcher.since(0, dev.id, "ack") if a["id"] == inst_id]
    assert len(acks) >= 2 and all(a == acks[0] for a in acks), acks
    assert fleet.device(dev.id).converged and "rt-probe" in fleet.device(dev.id).reported



def test_provider_link_reset_resyncs_each_device_once_not_forever(tmp_path):
    """The provider's own broker link is reset (through a TCP proxy; the device
    stays connected): when it reconnects, it re-syncs the device, born before
    the reconnect, from its retained state. Once: the sync's own ack and state
    must not ask for another (they did, a loop of full states at the
    provider's whole rate after every broker restart; found by the soak)."""
    from capshard.service.policy import minimal_baseline
    from capshard.service.provider import ProviderService
    from capshard.service.reconcile import ReconcileOptions
    from proxy import TcpProxy

    broker = Mosquitto().start()
    proxy = TcpProxy(broker.host, broker.port).start()
    keystore = Keystore()
    dev = Device("prov-resync", str(tmp_path / "dev"), broker, keystore=keystore)
    svc = ProviderService(proxy.host, proxy.port, keystore, minimal_baseline,
                          options=ReconcileOptions(check_delay_s=0.2)).start()
    try:
        dev.start()
        assert svc.fleet.wait_until(lambda f: (r := f.device(dev.id)) and r.reported and r.converged,
                                    CONVERGE_S), dev.log()[-2000:]
        before = len(svc.store.instructions(dev.id))
        proxy.reset()
        assert wait(lambda: svc._reconnected_at, CONVERGE_S)
        time.sleep(4)  # many rounds of sync -> ack -> state -> sync, were it looping
        rows = svc.store.instructions(dev.id)[before:]
        assert 1 <= len(rows) <= 2, [(r["seq"], r["state"]) for r in rows]
        assert all(r["state"] == "SUCCEEDED" for r in rows)
        rec = svc.fleet.device(dev.id)
        assert rec.online and rec.converged
    finally:
        svc.stop()
        dev.stop()
        proxy.stop()
        broker.cleanup()
