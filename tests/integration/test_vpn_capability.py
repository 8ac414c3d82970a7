"""The VPN capability end to end: a real signed instruction over mosquitto
activates cipher, tunnel and auth shards on a device agent; user traffic then
crosses the tunnel both ways (UDP on loopback, device under CPython, provider
endpoint in this process); a second instruction swaps AES-128 for AES-256
and the ack says the tunnel was kept up; traffic carries on under the new suite."""

import hashlib
import json
import os
import socket
import sys
import time

import pytest

from capshard import fwrun, localdev
from capshard.keys import Keystore
from capshard.paths import FIRMWARE_DIR
from capshard.service.provider import ProviderService

HERE = os.path.dirname(os.path.abspath(__file__))


def op(shard, slot, module, cpu, mem_kb, bw_kbps=0):
    return {"op": "activate", "shard": shard, "ver": "1.0.0", "slot": slot, "module": module, "cpu": cpu,
            "mem_kb": mem_kb, "bw_kbps": bw_kbps, "prio": "high", "dur_s": 0, "alt": None}


AES128 = op("aes128-ctr", "vpn.cipher", "capdev.shards.vpn.aes128_ctr", 10, 13)
AES256 = op("aes256-ctr", "vpn.cipher", "capdev.shards.vpn.aes256_ctr", 10, 13)
TUNNEL = op("udp-tunnel", "vpn.tunnel", "capdev.shards.vpn.udp_tunnel", 6, 24, 40)
AUTH = op("local-auth", "vpn.auth", "capdev.shards.vpn.local_auth", 3, 7)


def _tunnel_module():
    sys.path.insert(0, FIRMWARE_DIR)
    try:
        from capdev.shards.vpn import tunnel
    finally:
        sys.path.remove(FIRMWARE_DIR)
    return tunnel


class HostEnd:
    """The provider's tunnel endpoint: a responder on a loopback UDP port."""

    def __init__(self, tunnel, psk):
        self.t = tunnel
        self.ep = tunnel.Endpoint("responder", psk, keepalive_ms=500)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.02)
        self.port = self.sock.getsockname()[1]
        self.peer = None
        self.inbox = []

    def pump(self, seconds, until=lambda: False):
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            try:
                d, self.peer = self.sock.recvfrom(65535)
                payload, reply = self.ep.receive(d)
                if reply is not None:
                    self.sock.sendto(reply, self.peer)
                if payload is not None:
                    self.inbox.append(payload.decode())
            except socket.timeout:
                pass
            out = self.ep.poll()
            if out is not None and self.peer:
                self.sock.sendto(out, self.peer)
        return until()

    def send(self, dgram):
        assert dgram is not None
        self.sock.sendto(dgram, self.peer)


@pytest.fixture
def setup(tmp_path, broker):
    tunnel = _tunnel_module()
    keystore = Keystore()
    desired = {"ops": [AES128, TUNNEL, AUTH]}
    provider = ProviderService(broker.host, broker.port, keystore, lambda dev, birth: desired["ops"])
    provider.start()
    procs = []
    yield tunnel, keystore, provider, desired, procs, tmp_path
    for p in procs:
        localdev.stop(p)
    provider.stop()


def test_vpn_activated_by_instruction_carries_traffic_and_survives_cipher_swap(setup, broker):
    tunnel, keystore, provider, desired, procs, tmp_path = setup
    dev = "dev-vpn"
    d = str(tmp_path / dev)
    os.makedirs(d)
    salt = os.urandom(16)
    users = {"alice": {"salt": salt.hex(), "iter": 500,
                       "hash": hashlib.pbkdf2_hmac("sha256", b"wonderland", salt, 500).hex()}}
    with open(os.path.join(d, "vpn-users.json"), "w") as f:
        json.dump(users, f)
    _, key = keystore.provision(dev)
    psk = tunnel.psk_from_device_key(key, dev)  # the provider derives the same tunnel key
    host = HostEnd(tunnel, psk)
    vpn = {"peer": ["127.0.0.1", host.port], "users": os.path.join(d, "vpn-users.json"), "keepalive_ms": 500}
    localdev.provision_dir(d, keystore, dev, broker.host, broker.port,
                           board_overrides={"traffic_sources": [], "vpn": vpn})
    proc = fwrun.spawn("cpython", [os.path.join(HERE, "vpn_device.py"), os.path.join(d, "board.json"),
                                   os.path.join(d, "device.json"), d],
                       stdout=open(os.path.join(d, "agent.log"), "wb"), stderr=-2, start_new_session=True)
    proc.log_path = os.path.join(d, "agent.log")
    procs.append(proc)

    # 1. The provider's first (full-state) instruction activates the three shards.
    def first_ack(fleet):
        done = [i for i in fleet.instructions.values() if i.device_id == dev and i.state == "SUCCEEDED"]
        return done and done[0]
    assert provider.fleet.wait_until(first_ack, 30), localdev.read_log(proc)
    assert host.pump(10, lambda: host.ep.state == "up"), localdev.read_log(proc)

    # 2. Until a user authenticates, the device drops what the host sends.
    host.send(host.ep.send(b"too early"))
    host.pump(0.3)
    host.send(host.ep.send_auth("alice", "not-her-password"))
    assert host.pump(5, lambda: host.ep.auth_result is not None)
    assert host.ep.auth_result is False
    host.ep.auth_result = None
    host.send(host.ep.send_auth("alice", "wonderland"))
    assert host.pump(5, lambda: host.ep.auth_result is not None) and host.ep.auth_result is True

    # 3. Traffic both ways through the tunnel.
    for i in range(5):
        host.send(host.ep.send(b"ping %d" % i))
    assert host.pump(10, lambda: len(host.inbox) >= 5), localdev.read_log(proc)
    assert host.inbox == [f"echo ping {i}" for i in range(5)]
    assert host.ep.suite == 1 and host.ep.epoch == 0

    # 4. A second instruction swaps the cipher; the ack says the tunnel stayed up.
    inst = provider.send_instruction(dev, [AES256])
    desired["ops"] = [AES256, TUNNEL, AUTH]
    assert provider.fleet.wait_until(lambda f: f.instructions[inst["id"]].state == "SUCCEEDED", 20), \
        localdev.read_log(proc)
    provider.set_desired(dev, [AES256, TUNNEL, AUTH], why="cipher swapped")
    ack = provider.fleet.instructions[inst["id"]]
    results = ack.ack["results"]
    assert results and results[0]["shard"] == "aes256-ctr" and results[0]["code"] == "activated"
    assert "tunnel kept up" in results[0]["reason"] and "aes256-ctr" in results[0]["reason"]

    host.inbox.clear()
    for i in range(5):
        host.send(host.ep.send(b"after %d" % i))
        host.pump(0.05)
    assert host.pump(10, lambda: len(host.inbox) >= 5), localdev.read_log(proc)
    assert host.inbox == [f"echo after {i}" for i in range(5)]
    assert host.ep.suite == 2 and host.ep.epoch == 1  # same session, next epoch: no new handshake
    assert host.ep.stats["handshakes"] == 1 and host.ep.stats["tampered"] == 0
    assert proc.poll() is None
