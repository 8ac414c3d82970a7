"""The foundation's central claim, end to end over a real mosquitto: the same
firmware under MicroPython (heap capped at 128 KiB) and under CPython joins,
receives a signed instruction, acks it, and ends up in the provider's
recorded state.

The MicroPython device runs its code from a ROMFS image, as a board does
(bytecode executes in place, outside the heap), and without the traffic
monitor: this is the protocol round trip. The full agent's footprint is
measured by `make bench-device`."""

import paho.mqtt.publish as publish
import pytest

from capshard import localdev, wire
from capshard.keys import Keystore
from capshard.service.policy import MINIMAL_BASELINE, minimal_baseline
from capshard.service.provider import ProviderService

BASELINE = MINIMAL_BASELINE


@pytest.fixture
def provider(broker):
    keystore = Keystore()
    service = ProviderService(broker.host, broker.port, keystore, minimal_baseline)
    service.start()
    yield service
    service.stop()


@pytest.fixture
def devices(tmp_path, broker, provider):
    procs = []

    def start(device_id, runtime, heap_kb=128):
        d = localdev.provision_dir(str(tmp_path / device_id), provider.keystore, device_id,
                                   broker.host, broker.port, board_overrides={"traffic_sources": []})
        p = localdev.spawn_agent(runtime, d, heap_kb=heap_kb, code="romfs")
        procs.append(p)
        return p

    yield start
    for p in procs:
        localdev.stop(p)


def converged(device_id):
    def check(fleet):
        rec = fleet.devices.get(device_id)
        return bool(rec and rec.online and rec.reported and rec.reported == rec.desired
                    and any(i.device_id == device_id and i.state == "SUCCEEDED"
                            for i in fleet.instructions.values()))
    return check


def test_devices_on_both_runtimes_join_and_converge(provider, devices):
    mp = devices("dev-mpy", "micropython", heap_kb=128)
    cp = devices("dev-cpy", "cpython")
    for dev, proc in (("dev-mpy", mp), ("dev-cpy", cp)):
        assert provider.fleet.wait_until(converged(dev), 30), localdev.read_log(proc)
    rec = provider.fleet.devices["dev-mpy"]
    assert rec.birth["runtime"] == "micropython"
    assert rec.birth["heap_used"] > 0  # measured on the device, reported at birth
    assert provider.fleet.devices["dev-cpy"].birth["runtime"] == "cpython"
    assert list(rec.reported) == ["null-cipher"]
    assert not provider.fleet.errors


def test_forged_and_truncated_instructions_are_rejected_and_device_keeps_serving(provider, devices, broker):
    proc = devices("dev-f", "micropython")
    assert provider.fleet.wait_until(converged("dev-f"), 30), localdev.read_log(proc)
    inst_topic = wire.topic("dev-f", wire.INSTRUCTION)
    good = wire.make_instruction("dev-f", 99, BASELINE, True, 0)
    forged = wire.sign_instruction(good, b"\x00" * 32, b"dev-f#1")
    publish.single(inst_topic, forged, qos=1, hostname=broker.host, port=broker.port)
    publish.single(inst_topic, forged[:-7], qos=1, hostname=broker.host, port=broker.port)

    def rejections(fleet):
        return [a for _, d, a in fleet.events if d == "dev-f" and "rejected" in a]

    found = provider.fleet.wait_until(lambda f: len(rejections(f)) >= 2 and rejections(f), 20)
    assert found, localdev.read_log(proc)
    assert all("authentication failed" in r for r in found)
    # The device still takes a genuine instruction afterwards.
    inst = provider.send_instruction("dev-f", [dict(BASELINE[0], cpu=20, op="adjust")])
    assert provider.fleet.wait_until(
        lambda f: f.instructions[inst["id"]].state == "SUCCEEDED", 20), localdev.read_log(proc)
    assert proc.poll() is None


def test_provider_reports_truncated_cbor_and_keeps_running(provider, devices, broker):
    # The provider subscribes to the five kinds devices send, nothing else (the
    # broker's ACLs let a device publish only those), so a message on another
    # kind never reaches it: only the malformed one is reported.
    publish.single("capshard/v1/dev/ghost/bogus", b"\xa0", qos=1, hostname=broker.host, port=broker.port)
    publish.single("capshard/v1/dev/ghost/birth", wire.encode({"v": 1, "dev": "ghost"})[:-2],
                   qos=1, hostname=broker.host, port=broker.port)
    errors = provider.fleet.wait_until(lambda f: len(f.errors) >= 1 and f.errors, 10)
    texts = " | ".join(t for _, t in errors)
    assert "malformed CBOR" in texts and "unknown topic" not in texts
    proc = devices("dev-after", "cpython")
    assert provider.fleet.wait_until(converged("dev-after"), 30), localdev.read_log(proc)


def test_provider_started_after_the_device_asks_it_to_announce_itself(tmp_path, broker):
    """A provider that starts (or restarts with an empty store) after a device
    connected never saw its birth: the retained state tells it the device is
    online and its last sequence number, and a signed rebirth request brings
    the birth (then the full desired state)."""
    keystore = Keystore()
    d = localdev.provision_dir(str(tmp_path / "early"), keystore, "early", broker.host, broker.port,
                               board_overrides={"traffic_sources": []})
    proc = localdev.spawn_agent("cpython", d)
    try:
        first = ProviderService(broker.host, broker.port, keystore, minimal_baseline)
        with first:
            assert first.fleet.wait_until(converged("early"), 30), localdev.read_log(proc)
        late = ProviderService(broker.host, broker.port, keystore, minimal_baseline,
                               client_id="capshard-provider-2")  # a fresh, empty store
        with late:
            assert late.fleet.wait_until(converged("early"), 30), localdev.read_log(proc)
            texts = [t for _, dev, t in late.fleet.events if dev == "early"]
            assert any("rebirth requested" in t for t in texts), texts
            assert any(t.startswith("birth") for t in texts), texts
    finally:
        localdev.stop(proc)
