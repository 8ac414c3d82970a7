"""`capshard broker` against the real mosquitto it deploys: TLS only, no
anonymous clients, and ACLs that keep each device inside its own topics.
Devices are added and revoked with a reload (SIGHUP), never a restart."""

import os
import socket
import ssl
import threading

import paho.mqtt.client as mqtt

from capshard import wire
from capshard.deploy_broker import Deployment

from boardtools import capshard, wait_for


class Peer:
    """A paho client over TLS that records what it receives."""

    def __init__(self, dep, user, password):
        self.got = []
        self.connected = threading.Event()
        self.result = None
        self.disconnects = 0
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-{os.getpid()}-{id(self)}",
                             protocol=mqtt.MQTTv311)
        self.c.tls_set(ca_certs=dep.path("ca.crt"))
        self.c.username_pw_set(user, password)
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda c, u, m: self.got.append((m.topic, m.payload))
        self.c.on_disconnect = self._on_disconnect
        self.done = threading.Event()

    def _on_connect(self, c, u, flags, rc, props):
        self.result = rc
        if not rc.is_failure:
            self.connected.set()
        self.done.set()

    def _on_disconnect(self, c, u, flags, rc, props):
        self.disconnects += 1
        self.done.set()

    def connect(self, dep, timeout=10):
        self.c.connect(dep.host, dep.port, keepalive=30)
        self.c.loop_start()
        self.done.wait(timeout)
        return self.connected.is_set()

    def sub(self, topic):
        info = {}
        ev = threading.Event()
        self.c.on_subscribe = lambda c, u, mid, codes, props: (info.update(codes=codes), ev.set())
        self.c.subscribe(topic, qos=1)
        ev.wait(5)
        return info.get("codes")

    def pub(self, topic, payload=b"x"):
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_acls_confine_each_device_and_bad_credentials_are_refused(deployed_broker):
    dep = deployed_broker
    for d in ("dev-a", "dev-b"):
        dep.add_device(d)
    peers = []

    def peer(user, password):
        p = Peer(dep, user, password)
        peers.append(p)
        return p

    try:
        provider = peer(dep.provider_user, dep.provider_password())
        a = peer("dev-a", dep.device_password("dev-a"))
        b = peer("dev-b", dep.device_password("dev-b"))
        for p in (provider, a, b):
            assert p.connect(dep), p.result
        provider.sub(wire.PREFIX + "#")
        b.sub(wire.topic("dev-b", "inst"))
        a.sub(wire.topic("dev-a", "inst"))
        # dev-a tries to read dev-b's instructions, directly and by wildcard.
        a.sub(wire.topic("dev-b", "inst"))
        a.sub(wire.PREFIX + "+/inst")
        provider.pub(wire.topic("dev-b", "inst"), b"for-b")
        provider.pub(wire.topic("dev-a", "inst"), b"for-a")
        # dev-a tries to publish as dev-b, and to forge an instruction.
        a.pub(wire.topic("dev-b", "birth"), b"forged-birth")
        a.pub(wire.topic("dev-b", "ack"), b"forged-ack")
        a.pub(wire.topic("dev-a", "inst"), b"self-made-instruction")
        a.pub(wire.topic("dev-a", "birth"), b"own-birth")
        assert wait_for(lambda: (wire.topic("dev-a", "birth"), b"own-birth") in provider.got, 10)
        assert wait_for(lambda: (wire.topic("dev-b", "inst"), b"for-b") in b.got, 10)
        assert wait_for(lambda: (wire.topic("dev-a", "inst"), b"for-a") in a.got, 10)
        b.pub(wire.topic("dev-b", "state"), b"sync")  # a marker: all earlier traffic has been routed
        assert wait_for(lambda: (wire.topic("dev-b", "state"), b"sync") in provider.got, 10)
        assert [t for t, _ in a.got] == [wire.topic("dev-a", "inst")], a.got
        payloads = [m for _, m in provider.got]
        assert b"forged-birth" not in payloads and b"forged-ack" not in payloads
        assert b"self-made-instruction" not in payloads
        assert (wire.topic("dev-b", "inst"), b"for-b") not in a.got

        # Wrong password, unknown user, and no TLS at all: all refused.
        assert not peer("dev-a", "not-the-password").connect(dep)
        assert not peer("ghost", "whatever").connect(dep)
        with socket.create_connection((dep.host, dep.port), timeout=5) as s:
            s.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x1e\x00\x00")  # plain CONNECT
            s.settimeout(5)
            try:
                reply = s.recv(4)
            except (ConnectionResetError, socket.timeout):
                reply = b""
            assert reply[:1] != b"\x20"  # never a CONNACK on the TLS port
    finally:
        for p in peers:
            p.close()


def test_add_and_revoke_without_restarting_the_fleet(deployed_broker, tmp_path):
    dep = deployed_broker
    d = dep.directory
    capshard("broker", "add-device", d, "dev-a")
    pid = dep.pid()
    a = Peer(dep, "dev-a", dep.device_password("dev-a"))
    try:
        assert a.connect(dep)
        out = capshard("broker", "add-device", d, "dev-new").stdout
        assert "added" in out and "broker reloaded" in out
        new_pw = Deployment.load(d).device_password("dev-new")
        n = Peer(dep, "dev-new", new_pw)
        assert n.connect(dep), n.result
        capshard("broker", "revoke-device", d, "dev-new")
        # The reload drops the revoked device and refuses it from then on...
        assert wait_for(lambda: n.disconnects > 0, 10)
        n.close()
        again = Peer(dep, "dev-new", new_pw)
        assert not again.connect(dep)
        again.close()
        # ...while the broker kept running and dev-a kept its connection.
        assert dep.pid() == pid
        assert a.disconnects == 0 and a.c.is_connected()
        st = capshard("broker", "status", d).stdout
        assert "running" in st and "devices (1): dev-a" in st and "revoked (1): dev-new" in st
    finally:
        a.close()
    # Secrets stay in mode-600 files and out of the CLI's output.
    for name in ("credentials.json", "ca.key", "server.key", "passwd"):
        assert os.stat(os.path.join(d, name)).st_mode & 0o077 == 0, name
    assert new_pw not in out
    with open(os.path.join(d, "passwd")) as f:
        assert new_pw not in f.read() and dep.device_password("dev-a") not in open(os.path.join(d, "passwd")).read()
    capshard("broker", "stop", d)
    assert dep.pid() is None
    assert capshard("broker", "status", d, check=False).returncode == 3


def test_server_certificate_verifies_against_the_deployment_ca(tmp_path):
    dep = Deployment.init(str(tmp_path / "b"), host="broker.lan", names=["10.0.0.5"])
    ctx = ssl.create_default_context(cafile=dep.path("ca.crt"))
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(open(dep.path("server.crt"), "rb").read())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"broker.lan", "localhost", "127.0.0.1", "10.0.0.5"} <= set(san.get_values_for_type(x509.DNSName))
    assert cert.not_valid_before_utc.year == 2000  # boards without a set clock still verify
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert dep.ca_der()[:1] == b"\x30"  # DER, as boards load it
