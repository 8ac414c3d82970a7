"""The provider subscribes to what devices send, one filter per kind, so the
broker does not bring its own instructions back to it; alone and in a share
group (MQTT 5 shared subscriptions, where subscription identifiers tell the
group's copy of a state from the plain one). Against a real mosquitto."""

import time

import pytest

from capshard import wire
from capshard.service.fleet import Fleet
from capshard.service.policy import minimal_baseline
from capshard.service.provider import ProviderService
from capshard.service.reconcile import ReconcileOptions
from capshard.service.store import open_store
from fakedevice import FakeDevice
from polling import wait_until

DEVICE = "dev-sub"


def _wait_for(predicate, timeout=10.0):
    return wait_until(predicate, timeout)


@pytest.mark.parametrize("share_group", [None, "dsa"])
def test_the_provider_receives_device_messages_once_and_never_its_own_instructions(tmp_path, broker, keystore,
                                                                                    share_group):
    keystore.provision(DEVICE)
    svc = ProviderService(broker.host, broker.port, keystore, minimal_baseline,
                          fleet=Fleet(open_store(str(tmp_path / "fleet.sqlite"))), share_group=share_group,
                          options=ReconcileOptions(birth_jitter_s=0.0, check_delay_s=0.1))
    assert set(svc.handlers) == set(wire.DEVICE_KINDS)   # what it subscribes to is what it handles
    delivered = []   # every message the broker hands the provider's client
    handle = svc.client.on_message

    def record(client, userdata, message):
        delivered.append(message)
        handle(client, userdata, message)

    svc.client.on_message = record
    device = FakeDevice(broker, DEVICE)
    svc.start()
    try:
        device.birth()
        inst = _wait_for(lambda: device.instructions and device.instructions[0])
        assert inst and inst["full"], "no full sync after the birth"
        device.apply(inst)
        assert svc.fleet.wait_until(lambda f: f.instructions[inst["id"]].state == "SUCCEEDED", 10)
        assert _wait_for(lambda: any(m.topic.endswith("/state") for m in delivered))
        time.sleep(0.3)   # room for any late delivery to show
    finally:
        svc.stop()
        device.stop()

    kinds = [m.topic.rsplit("/", 1)[1] for m in delivered]
    assert wire.INSTRUCTION not in kinds, f"the provider received its own instructions: {kinds}"
    # Each device message is recorded once; in a share group the live state's
    # second copy (the plain state subscription's) is told apart and dropped.
    recorded = sorted(wire.split_topic(m.topic)[1] for m in delivered if not svc._duplicate(m))
    assert recorded == ["ack", "birth", "state"], kinds
    assert svc.metrics.rejected_messages._value.get() == 0
