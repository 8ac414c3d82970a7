"""Reconciliation end to end: real device agents (CPython, and one under
MicroPython), a real mosquitto, the fleet on SQLite and on PostgreSQL."""

import json
import os
import signal
import time

import pytest

from capshard import localdev, wire
from capshard.service.fleet import Fleet, profiles_match
from capshard.service.policy import MINIMAL_BASELINE, AllocatorPolicy, minimal_baseline
from capshard.service.provider import ProviderService
from capshard.service.reconcile import ReconcileOptions
from capshard.service.store import open_store

DATA = os.path.join(os.path.dirname(__file__), "data")
CATALOG = os.path.join(DATA, "catalog.toml")
AGREEMENTS = os.path.join(DATA, "agreements.toml")

PROBE = {"op": "activate", "shard": "rt-probe", "ver": "1.0.0", "slot": "monitoring.probe", "cpu": 5, "mem_kb": 8,
         "bw_kbps": 100, "prio": "high", "dur_s": 0, "alt": None, "module": "capdev.shards.counter"}
GAME = {"v": 1, "seq": 1, "t": 0, "classes": {"real-time-interactive": {"bw_kbps": 300, "lat_ms": 30, "flows": 2,
                                                                        "conf": 90}},
        "security": {"level": "integrity", "dests": []}}


def converged(device_id, shards=None):
    def check(fleet):
        rec = fleet.device(device_id)
        ok = bool(rec and rec.online and rec.desired_version and profiles_match(rec.desired, rec.reported))
        return ok and (shards is None or set(rec.reported) == set(shards)) and rec
    return check


@pytest.fixture
def service_factory(broker, keystore):
    services = []

    def make(store_url, policy=None, **opts):
        options = ReconcileOptions(**dict({"retry_base_s": 0.3, "check_delay_s": 0.2}, **opts))
        svc = ProviderService(broker.host, broker.port, keystore, minimal_baseline,
                              fleet=Fleet(open_store(store_url)), policy=policy, options=options,
                              client_id=f"provider-{len(services)}")
        services.append(svc.start())
        return svc

    yield make
    for s in services:
        s.stop()


def test_offline_device_converges_on_reconnect(store_url, service_factory, agents, keystore):
    svc = service_factory(store_url)
    proc = agents("dev-off", "cpython", keystore)
    assert svc.fleet.wait_until(converged("dev-off", ["null-cipher"]), 20), localdev.read_log(proc)
    localdev.stop(proc)
    assert svc.fleet.wait_until(lambda f: not f.device("dev-off").online, 10)
    sent_before = len(svc.fleet.instructions_of("dev-off"))

    # While it is away its desired state changes twice; nothing can reach it.
    v = svc.set_desired("dev-off", [PROBE], why="operator adds the probe")
    svc.set_desired("dev-off", MINIMAL_BASELINE + [dict(PROBE, cpu=7)], expected_version=v, why="and the cipher")
    time.sleep(0.5)
    assert len(svc.fleet.instructions_of("dev-off")) == sent_before   # nothing sent to an offline device

    proc = agents("dev-off", "cpython", keystore)   # same state dir: it remembers its old profile
    rec = svc.fleet.wait_until(converged("dev-off", ["null-cipher", "rt-probe"]), 20)
    assert rec, localdev.read_log(proc)
    assert rec.reported["rt-probe"]["cpu"] == 7 and rec.desired_version == 3
    last = svc.fleet.instructions_of("dev-off")[-1]
    assert last.full and last.state == "SUCCEEDED" and last.desired_version == 3


def test_stale_write_through_the_service_is_refused(store_url, service_factory, agents, keystore):
    from capshard.service.store import StaleWrite
    svc = service_factory(store_url)
    proc = agents("dev-s", "cpython", keystore)
    rec = svc.fleet.wait_until(converged("dev-s"), 20)
    assert rec, localdev.read_log(proc)
    v = svc.set_desired("dev-s", MINIMAL_BASELINE + [PROBE], expected_version=rec.desired_version)
    with pytest.raises(StaleWrite):
        svc.set_desired("dev-s", [], expected_version=rec.desired_version)   # written against the old version
    assert svc.fleet.wait_until(converged("dev-s", ["null-cipher", "rt-probe"]), 20)
    assert svc.fleet.device("dev-s").desired_version == v


def test_replans_on_needs_agreement_and_catalog_changes(tmp_path, service_factory, agents, keystore, broker):
    import paho.mqtt.publish as publish

    from capshard import wire
    policy = AllocatorPolicy.from_files(CATALOG, AGREEMENTS, "lab")
    svc = service_factory(str(tmp_path / "fleet.sqlite"), policy=policy)
    proc = agents("dev-p", "cpython", keystore)
    assert svc.fleet.wait_until(converged("dev-p", ["null-cipher"]), 20), localdev.read_log(proc)

    # needs: interactive traffic appears (a QoS report on the device's topic)
    publish.single(wire.topic("dev-p", "qos"), wire.encode(dict(GAME, dev="dev-p")), qos=1,
                   hostname=broker.host, port=broker.port)
    rec = svc.fleet.wait_until(converged("dev-p", ["null-cipher", "rt-probe"]), 20)
    assert rec, localdev.read_log(proc)
    assert rec.reported["rt-probe"]["dur_s"] == 300 and rec.desired_expires_at is not None
    delta = svc.fleet.instructions_of("dev-p")[-1]
    assert not delta.full and [o["op"] for o in delta.ops] == ["activate"]   # only the difference is sent

    # agreement: the lean tier has no probe
    assert svc.assign_agreement("dev-p", "lean")
    rec = svc.fleet.wait_until(converged("dev-p", ["null-cipher"]), 20)
    assert rec and rec.tier == "lean", localdev.read_log(proc)

    # catalog: the probe gets cheaper and the lab tier is back; the new costs reach the device
    assert svc.assign_agreement("dev-p", "lab")
    assert svc.fleet.wait_until(converged("dev-p", ["null-cipher", "rt-probe"]), 20)
    text = open(CATALOG).read().replace("cost = { cpu = 5, mem_kb = 8, bw_kbps = 100 }",
                                        "cost = { cpu = 3, mem_kb = 8, bw_kbps = 100 }")
    (tmp_path / "catalog.toml").write_text(text)
    assert svc.set_policy(AllocatorPolicy.from_files(str(tmp_path / "catalog.toml"), AGREEMENTS, "lab")) == ["dev-p"]
    assert svc.fleet.wait_until(lambda f: converged("dev-p")(f) and
                                f.device("dev-p").reported["rt-probe"]["cpu"] == 3, 20), localdev.read_log(proc)
    assert svc.metrics.decision_latency.collect()[0].samples  # decisions were timed
    assert not svc.fleet.errors


def test_unacked_instruction_is_retried_then_succeeds_or_times_out(tmp_path, service_factory, agents, keystore):
    svc = service_factory(str(tmp_path / "fleet.sqlite"), ttl_s=4)
    proc = agents("dev-r", "cpython", keystore)
    assert svc.fleet.wait_until(converged("dev-r"), 20), localdev.read_log(proc)

    os.kill(proc.pid, signal.SIGSTOP)    # frozen: connected as far as the broker knows, but silent
    try:
        svc.set_desired("dev-r", MINIMAL_BASELINE + [PROBE])
        inst = svc.fleet.wait_until(lambda f: [i for i in f.instructions_of("dev-r") if i.attempts >= 3], 10)
        assert inst and inst[0].state == "IN_PROGRESS"
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    # the device wakes up, gets the (de-duplicated) redeliveries and acks once
    done = svc.fleet.wait_until(lambda f: f.instructions[inst[0].id].state == "SUCCEEDED" and
                                converged("dev-r", ["null-cipher", "rt-probe"])(f), 15)
    assert done, localdev.read_log(proc)

    os.kill(proc.pid, signal.SIGSTOP)
    try:
        svc.set_desired("dev-r", MINIMAL_BASELINE)
        lost = svc.fleet.wait_until(lambda f: [i for i in f.instructions_of("dev-r") if i.state == "TIMED_OUT"], 10)
        assert lost and "no ack within 4 s" in lost[0].reason
        assert svc.metrics.instructions.labels("TIMED_OUT")._value.get() == 1
    finally:
        os.kill(proc.pid, signal.SIGCONT)


def test_instruction_committed_but_never_published_is_sent_by_the_retries(tmp_path, service_factory, agents,
                                                                          keystore):
    """A provider that dies between committing an instruction and publishing
    it leaves it QUEUED: the retries (this or another provider's) send it."""
    svc = service_factory(str(tmp_path / "fleet.sqlite"), ttl_s=20)
    proc = agents("dev-q", "cpython", keystore)
    assert svc.fleet.wait_until(converged("dev-q"), 20), localdev.read_log(proc)
    now = time.time()
    inst = wire.make_instruction("dev-q", svc.store.next_seq("dev-q"), [dict(MINIMAL_BASELINE[0], op="adjust", cpu=21)],
                                 False, now, 20)
    svc.store.add_instruction(inst, 0, None, now, now + 20, publish_by=now + 0.5)   # ...and no publish
    done = svc.fleet.wait_until(lambda f: f.instructions[inst["id"]].state == "SUCCEEDED", 15)
    assert done, (svc.fleet.instructions[inst["id"]], localdev.read_log(proc))
    assert svc.fleet.instructions[inst["id"]].attempts == 1


def test_reconnect_storm_after_broker_restart_is_spread_and_rate_limited(tmp_path, service_factory, agents,
                                                                         keystore, broker):
    rate = 4.0
    svc = service_factory(str(tmp_path / "fleet.sqlite"), rate_per_s=rate, burst=1, birth_jitter_s=0.5)
    names = [f"dev-h{i}" for i in range(5)]
    procs = [agents(n, "cpython", keystore) for n in names]
    for n, p in zip(names, procs):
        assert svc.fleet.wait_until(converged(n), 20), localdev.read_log(p)
    restart_at = time.time()
    broker.restart()
    # Devices and the provider reconnect in any order; each device gets its full
    # state again (from its birth, or from its retained state if the provider
    # came back after it), one at a time at the service's rate.
    def syncs(f):
        return [i for i in f.instructions.values() if i.full and i.created_at > restart_at]

    assert svc.fleet.wait_until(lambda f: {i.device_id for i in syncs(f) if i.state == "SUCCEEDED"} == set(names),
                                30), [(i.device_id, i.state) for i in syncs(svc.fleet)]
    syncs = syncs(svc.fleet)
    sent = sorted(i.sent_at for i in syncs)
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    assert min(gaps) > 0.8 / rate, gaps    # never faster than the rate limit
    for n in names:
        assert svc.fleet.wait_until(converged(n), 10)


def test_device_under_micropython_joins_and_gets_its_allocated_baseline(tmp_path, service_factory, agents,
                                                                         keystore):
    policy = AllocatorPolicy.from_files(CATALOG, AGREEMENTS, "lab")
    svc = service_factory(str(tmp_path / "fleet.sqlite"), policy=policy)
    proc = agents("dev-mpy", "micropython", keystore)
    rec = svc.fleet.wait_until(converged("dev-mpy", ["null-cipher"]), 30)
    assert rec, localdev.read_log(proc)
    assert rec.birth["runtime"] == "micropython" and rec.tier is None
    assert json.loads(json.dumps(rec.reported))["null-cipher"]["cpu"] == 2   # the catalog's cost, not the demo's
