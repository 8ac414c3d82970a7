"""What scaling out relies on: a broker cluster and a PostgreSQL DSN in the
service config, start-up over a list of brokers and failing over between
them, and the allocator's choice cache giving exactly the plans a fresh
allocation gives."""

import copy
import random
import time

import pytest

from capshard.allocator import DeviceState, Needs, allocate
from capshard.broker import Mosquitto, free_port
from capshard.service import config
from capshard.service.fleet import DeviceRecord
from capshard.service.policy import AllocatorPolicy, minimal_baseline
from capshard.service.provider import ProviderService
from capshard.service.reconcile import ReconcileOptions
from fakedevice import FakeDevice
from polling import wait_until

NEEDS = (
    ({"real-time-interactive": {"bw_kbps": 300, "lat_ms": 50, "flows": 2, "conf": 90}}, "none"),
    ({"multimedia-streaming": {"bw_kbps": 6000, "lat_ms": None, "flows": 3, "conf": 80}}, "confidentiality"),
    ({"telephony": {"bw_kbps": 90, "lat_ms": 150, "flows": 2, "conf": 90},
      "oam": {"bw_kbps": 5, "lat_ms": None, "flows": 1, "conf": 100}}, "integrity"),
)


def load(tmp_path, text):
    path = tmp_path / "dsa.toml"
    path.write_text(text)
    return config.load(str(path))


def test_config_takes_a_broker_cluster_and_a_dsn(tmp_path):
    cfg = load(tmp_path, '[broker]\nhosts = ["emqx-1:8883", "emqx-2", {host = "emqx-3", port = 1884}]\n'
                         'port = 8883\n[store]\ndsn = "postgresql://capshard@db:5432/fleet"\n')
    assert cfg.brokers == [("emqx-1", 8883), ("emqx-2", 8883), ("emqx-3", 1884)]
    assert (cfg.broker_host, cfg.broker_port) == ("emqx-1", 8883)
    assert cfg.store_url == "postgresql://capshard@db:5432/fleet"
    assert load(tmp_path, '[broker]\nhost = "b"\nport = 1\n').brokers == [("b", 1)]


@pytest.mark.parametrize("text, why", [
    ('[broker]\nhosts = []\n', "hosts is empty"),
    ('[broker]\nhosts = ["a:x"]\n', "bad port"),
    ('[broker]\nhosts = ["a:70000"]\n', "bad port"),
    ('[broker]\nhosts = [3]\n', "each is"),
    ('[broker]\nhost = "a"\nhosts = ["b"]\n', "not both"),
    ('[store]\nurl = "a"\ndsn = "b"\n', "not both"),
])
def test_config_refuses_a_bad_cluster(tmp_path, text, why):
    with pytest.raises(config.ConfigError, match=why):
        load(tmp_path, text)


def test_provider_starts_on_the_first_broker_that_answers(broker):
    svc = ProviderService("unused", 0, {}, desired_for=lambda d, b: [],
                          brokers=[("127.0.0.1", free_port()), (broker.host, broker.port)])
    svc.start()
    try:
        assert (svc.host, svc.port) == (broker.host, broker.port)
    finally:
        svc.stop()


def test_provider_start_fails_clearly_when_no_broker_answers():
    svc = ProviderService("unused", 0, {}, desired_for=lambda d, b: [],
                          brokers=[("127.0.0.1", free_port()), ("127.0.0.1", free_port())])
    with pytest.raises(RuntimeError, match="could not connect to the broker"):
        svc.start(timeout=2)
    assert not svc.link._thread, "it stopped trying"


def test_provider_follows_the_cluster_when_its_node_goes(keystore):
    """Two nodes (standalone brokers: what matters is where the provider
    goes). Its node is killed: it moves to the other and serves a device
    there. That one goes and the first is back: it moves back. paho alone
    would retry the dead node forever (its host cannot change while it
    retries)."""
    a, b = Mosquitto().start(), Mosquitto().start()
    keystore.provision("dev-on-b")
    svc = ProviderService("unused", 0, keystore, minimal_baseline, brokers=[(a.host, a.port), (b.host, b.port)],
                          options=ReconcileOptions(birth_jitter_s=0.0))
    device = None
    try:
        svc.start()
        assert svc.port == a.port
        a.kill()
        assert wait_until(lambda: svc.link.up.is_set() and svc.port == b.port, 10), "still not on node B"
        device = FakeDevice(b, "dev-on-b")
        device.birth()
        assert wait_until(lambda: device.instructions, 10), "no instruction through node B"
        assert device.instructions[0]["full"]
        a.start()
        b.kill()
        assert wait_until(lambda: svc.link.up.is_set() and svc.port == a.port, 15), "not back on node A"
    finally:
        if device:
            device.stop()
        svc.stop()
        a.cleanup()
        b.cleanup()


def decide_and_allocate(policy, rec, tier, now, caps, reported):
    """(the policy's plan, a fresh allocation's plan) for the device, asserted equal."""
    got = policy.decide(rec, tier, now)
    state = DeviceState("sim", dict(caps), copy.deepcopy(reported), None)
    previous = {"expires_at": rec.desired_expires_at} if rec.desired_expires_at else None
    fresh = allocate(policy.catalog, policy.agreements[tier], state, Needs.from_report(rec.needs), now,
                     previous=previous)
    assert (got.profile, got.operations, got.expires_at, got.explanations, got.preempted) == \
        (fresh.profile, fresh.operations, fresh.expires_at, fresh.explanations, fresh.preempted)
    return got, fresh


def test_choice_cache_gives_the_plans_a_fresh_allocation_gives():
    policy = AllocatorPolicy.from_files()
    rng = random.Random(7)
    for trial in range(60):
        caps = {"cpu": 100, "mem_kb": rng.choice([48, 128, 300]), "bw_kbps": rng.choice([2000, 20000])}
        rec = DeviceRecord(f"d{trial % 5}", True, {"board": "simulated", "caps": caps, "last_seq": 0})
        reported = {}
        for step in range(5):
            classes, level = NEEDS[rng.randrange(len(NEEDS))]
            rec.needs = {"v": 1, "dev": rec.device_id, "seq": step, "t": 0, "classes": classes,
                         "security": {"level": level, "dests": ["bank.example"] if level != "none" else []}}
            rec.reported = reported
            now = time.time() + rng.uniform(0, 4000)
            rec.desired_expires_at = rng.choice([None, now + rng.uniform(-100, 4000)])
            tier = rng.choice(policy.tiers())
            got, fresh = decide_and_allocate(policy, rec, tier, now, caps, reported)
            reported = copy.deepcopy(got.profile)
    # devices alike shared entries: the cached paths (a cached choice, a cached plan) were checked
    assert policy.choices.hits > 5 and policy.plans.hits > 5


def test_choice_cache_is_bounded():
    from capshard.allocator.core import ChoiceCache
    cache = ChoiceCache(size=3)
    for k in range(5):
        cache.put(k, k)
    assert cache.get(0) is None and cache.get(1) is None and cache.get(4) == 4
    assert len(cache.entries) == 3


def test_plan_cache_gives_the_plans_a_fresh_allocation_gives_across_leases():
    """Whole plans are cached per (choice, lease countdowns, lease position):
    devices in step share entries, and each still gets its own expiry."""
    policy = AllocatorPolicy.from_files()
    rng = random.Random(11)
    base = time.time()
    for trial in range(200):
        caps = {"cpu": 100, "mem_kb": 300, "bw_kbps": 20000}
        rec = DeviceRecord(f"d{trial}", True, {"board": "simulated", "caps": caps, "last_seq": 0})
        reported = {}
        for step in range(4):
            classes, level = NEEDS[(trial + step) % 2]
            rec.needs = {"v": 1, "dev": rec.device_id, "seq": step, "t": 0, "classes": classes,
                         "security": {"level": level, "dests": ["bank.example"] if level != "none" else []}}
            rec.reported = reported
            now = base + step * 10 + rng.choice([0.0, 0.25, 0.5])
            rec.desired_expires_at = rng.choice([None, base + 3600, base + 7200, now + 5, now + 100000])
            tier = rng.choice(policy.tiers())
            got, fresh = decide_and_allocate(policy, rec, tier, now, caps, reported)
            got.profile.clear()          # callers may change what they got: the cache keeps its own
            reported = copy.deepcopy(fresh.profile)
    assert policy.plans.hits > 100
