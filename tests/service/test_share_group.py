"""Several provider processes on one fleet (docs/scaling.md): one
PostgreSQL store, one MQTT 5 share group. Each device message is handled
by one of them, each device's work is done once, and when one provider
goes the others carry on with its share. Real mosquitto, real PostgreSQL."""

import time

from capshard import wire
from capshard.service.fleet import Fleet
from capshard.service.policy import minimal_baseline
from capshard.service.provider import ProviderService
from capshard.service.reconcile import ReconcileOptions
from capshard.service.store import open_store
from fakedevice import FakeDevice
from pgserver import fresh_db
from polling import wait_until


def _provider(broker, keystore, url, n, seen):
    svc = ProviderService(broker.host, broker.port, keystore, minimal_baseline, fleet=Fleet(open_store(url)),
                          share_group="dsa", client_id=f"dsa-{n}",
                          options=ReconcileOptions(birth_jitter_s=0.0, check_delay_s=0.1))
    handle = svc.client.on_message

    def record(client, userdata, message):
        if not svc._duplicate(message):
            seen.append(wire.split_topic(message.topic))
        handle(client, userdata, message)

    svc.client.on_message = record
    return svc.start()


def _born_and_served(devices, store, timeout=15):
    for d in devices:
        d.birth()
    assert wait_until(lambda: all(d.instructions for d in devices), timeout), \
        [d.device_id for d in devices if not d.instructions]
    ids = []
    for d in devices:
        d.apply(d.instructions[0])
        ids.append(d.instructions[0]["id"])
    assert wait_until(lambda: all(store.get_instruction(i)["state"] == "SUCCEEDED" for i in ids), timeout)


def test_providers_in_a_share_group_split_the_fleet_and_carry_on_when_one_goes(broker, keystore, pg_server):
    url = fresh_db(pg_server)
    seen = {1: [], 2: []}
    providers = {n: _provider(broker, keystore, url, n, seen[n]) for n in (1, 2)}
    store = open_store(url)
    devices = []
    try:
        for i in range(10):
            keystore.provision(f"dev-{i}")
        first = [FakeDevice(broker, f"dev-{i}") for i in range(6)]
        devices += first
        _born_and_served(first, store)
        time.sleep(0.5)   # room for a second instruction, were any work done twice
        assert [len(d.instructions) for d in first] == [1] * 6
        births = {n: sorted(d for d, kind in seen[n] if kind == "birth") for n in seen}
        assert births[1] and births[2], f"the group did not split the births: {births}"
        assert sorted(births[1] + births[2]) == sorted(d.device_id for d in first), "a birth handled twice"

        providers.pop(1).stop()
        later = [FakeDevice(broker, f"dev-{i}") for i in range(6, 10)]
        devices += later
        _born_and_served(later, store)
        assert {d for d, kind in seen[2] if kind == "birth"} >= {d.device_id for d in later}
    finally:
        for d in devices:
            d.stop()
        for svc in providers.values():
            svc.stop()
        store.close()
