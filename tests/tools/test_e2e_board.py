"""The whole operator path on the simulated board: `capshard broker` deploys
mosquitto with TLS and ACLs, `capshard flash` puts the firmware on the board
with the real mpremote, the board resets, boots and joins the provider over
TLS, takes a signed instruction and acks it; `capshard console` then reads its
status over the serial port."""

import json
import os

from boardtools import capshard

from capshard.keys import Keystore
from capshard.service.policy import minimal_baseline
from capshard.service.provider import ProviderService

DEVICE = "sim-e2e"
# Importing the agent takes ~111 KiB of heap as .mpy and the agent connected
# over TLS ~137 KiB, more with traffic monitoring: more than an ESP32 without
# PSRAM has (docs/esp32-quickstart.md). The simulated board gets a PSRAM-class heap.
HEAP_KB = 320


def converged(device_id):
    def check(fleet):
        rec = fleet.devices.get(device_id)
        return bool(rec and rec.online and rec.reported and rec.reported == rec.desired
                    and any(i.device_id == device_id and i.state == "SUCCEEDED"
                            for i in fleet.instructions.values()))
    return check


def test_flash_boot_join_over_tls_ack_and_console_status(simboard, deployed_broker, tmp_path):
    dep = deployed_broker
    ks = str(tmp_path / "keystore.json")
    capshard("broker", "add-device", dep.directory, DEVICE)
    board = simboard(heap_kb=HEAP_KB)

    out = capshard("flash", board.port, "--board", "simulated", "--device-id", DEVICE,
                   "--keystore", ks, "--broker-dir", dep.directory).stdout
    assert "verify:" in out and "reset: the board is booting" in out, out
    secrets = [Keystore.load(ks).get(DEVICE)[1].hex(), dep.device_password(DEVICE)]
    assert not any(s in out for s in secrets)
    deployed = json.load(open(os.path.join(board.board_dir, "board.json")))
    assert deployed["broker"] == {"host": dep.host, "port": dep.port, "tls": True, "ca_file": "ca.der",
                                  "keepalive_s": 30}

    service = ProviderService(dep.host, dep.port, Keystore.load(ks), minimal_baseline)
    dep.paho_tls(service.client)  # the provider's own credentials, TLS against the deployment CA
    with service:
        ok = service.fleet.wait_until(converged(DEVICE), 40)
        assert ok, (service.fleet.events, service.fleet.errors, dep.log_tail(20))
        rec = service.fleet.devices[DEVICE]
        assert rec.birth["runtime"] == "micropython" and rec.birth["board"] == "simulated"
        assert list(rec.reported) == ["null-cipher"]

        log_path = str(tmp_path / "console.log")
        status = capshard("console", board.port, "--diag", "--log", log_path, timeout=60).stdout
        assert f"device     {DEVICE} on simulated (micropython" in status, status
        assert f"{dep.host}:{dep.port} TLS: connected" in status, status
        assert "shard      null-cipher" in status, status
        assert "heap       free" in status and "KiB" in status
        with open(log_path) as f:
            assert "DIAG {" in f.read()  # the session log keeps what the board said

        # Reflashing the same firmware copies nothing; the board reboots and rejoins.
        births = sum(1 for _, d, t in service.fleet.events if d == DEVICE and t.startswith("birth"))
        again = capshard("flash", board.port, "--board", "simulated", "--device-id", DEVICE,
                         "--keystore", ks, "--broker-dir", dep.directory).stdout
        assert "done: copied 0 files, removed 0" in again, again
        assert service.fleet.wait_until(
            lambda f: sum(1 for _, d, t in f.events if d == DEVICE and t.startswith("birth")) > births, 30)
    assert not service.fleet.errors
