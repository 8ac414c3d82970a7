"""The UDP tunnel shard: protocol behaviour in one process under both runtimes,
then real datagrams between a device endpoint under MicroPython and a host
endpoint under CPython, with replayed and tampered datagrams injected."""

import json
import os
import socket
import subprocess
import sys
import time

from capshard import fwrun
from capshard.paths import FIRMWARE_DIR

CORE = r"""
import json
from capdev.cmm.clock import OffsetClock
from capdev.shards.vpn import tunnel, aes128_ctr, aes256_ctr
from capdev.shards import null_cipher
psk = tunnel.psk_from_device_key(b'\x07' * 32, 'dev-t')
clock = OffsetClock()
def shard(mod, name):
    s = mod.Shard(name); s.clock = clock; s.configure({'bw_kbps': 0}); s.start(); return s
dev = tunnel.Endpoint('initiator', psk, clock, mtu=200, keepalive_ms=1000)
host = tunnel.Endpoint('responder', psk, clock, mtu=200, keepalive_ms=1000)
out = {}
out['bind'] = dev.set_cipher(shard(aes128_ctr, 'c1'))
hello = dev.connect()
_, ack = host.receive(hello)
dev.receive(ack)
out['up'] = [dev.state, host.state]
d1 = dev.send(b'one')
out['got'] = host.receive(d1)[0].decode()
out['replay'] = host.receive(d1)[0]
t = bytearray(dev.send(b'two')); t[-1] ^= 1
out['tamper'] = host.receive(bytes(t))[0]
t = bytearray(dev.send(b'three')); t[12] ^= 1  # header (seq) is authenticated too
out['tamper_hdr'] = host.receive(bytes(t))[0]
out['after'] = host.receive(dev.send(b'four'))[0].decode()
# out of order inside the window is fine; below the window is a replay
late = [dev.send(b'late%d' % i) for i in range(70)]
out['late_last'] = host.receive(late[-1])[0].decode()
out['late_mid'] = host.receive(late[40])[0].decode()
out['late_old'] = host.receive(late[2])[0]
# MTU: the largest payload passes, one more byte is refused and counted
out['max'] = dev.max_payload()
out['fits'] = len(host.receive(dev.send(b'x' * dev.max_payload()))[0])
out['too_big'] = dev.send(b'x' * (dev.max_payload() + 1))
# wrong pre-shared key cannot start a session
rogue = tunnel.Endpoint('initiator', tunnel.psk_from_device_key(b'\x08' * 32, 'dev-t'), clock)
rogue.set_cipher(shard(aes128_ctr, 'c9'))
out['rogue'] = host.receive(rogue.connect())[1]
# keepalives: none before the period, one after; the peer counts it
out['ka0'] = dev.poll()
clock.advance(1000)
ka = dev.poll()
host.receive(ka)
out['ka'] = [dev.stats['keepalives_sent'], host.stats['keepalives_received']]
# swap the cipher: same session, next epoch, no handshake
out['swap'] = dev.set_cipher(shard(aes256_ctr, 'c2'))
out['swapped'] = host.receive(dev.send(b'five'))[0].decode()
_, none = None, None
back = host.send(b'six')
out['back'] = dev.receive(back)[0].decode()
out['epochs'] = [dev.epoch, host.epoch, dev.suite, host.suite]
# the null cipher (no seal/open) runs as HMAC-only: data visible, still authenticated
out['null'] = dev.set_cipher(shard(null_cipher, 'n'))
nd = dev.send(b'plain-visible')
out['null_clear'] = b'plain-visible' in nd
out['null_got'] = host.receive(nd)[0].decode()
# dead peer: nothing heard for dead_ms -> the initiator starts a new handshake
clock.advance(3000)
re = dev.poll()
out['dead'] = [dev.state, tunnel.parse_header(re)[0] == tunnel.HELLO]
out['dev'] = dev.stats
out['host'] = host.stats
print(json.dumps(out))
"""


def test_tunnel_protocol_on_both_runtimes(fw):
    r = fw.run_json(CORE, heap_kb=512)
    assert r["bind"] == "reestablish" and r["up"] == ["up", "up"]
    assert r["got"] == "one" and r["replay"] is None
    assert r["tamper"] is None and r["tamper_hdr"] is None and r["after"] == "four"
    assert r["late_last"] == "late69" and r["late_mid"] == "late40" and r["late_old"] is None
    assert r["fits"] == r["max"] == 200 - 16 - 16 and r["too_big"] is None
    assert r["rogue"] is None
    assert r["ka0"] is None and r["ka"] == [1, 1]
    assert r["swap"] == "kept" and r["swapped"] == "five" and r["back"] == "six"
    assert r["epochs"] == [1, 1, 2, 2]
    assert r["null"] == "kept" and r["null_clear"] and r["null_got"] == "plain-visible"
    assert r["dead"] == ["connecting", True]
    host = r["host"]
    assert host["replayed"] == 2 and host["tampered"] == 3  # 2 forged data + the rogue HELLO
    assert host["rekeys"] == 2 and r["dev"]["too_big"] == 1 and r["dev"]["handshakes"] == 2


DEVICE = r"""
import json, sys, time
from capdev import platform
from capdev.shards.vpn import tunnel, udp_tunnel, aes128_ctr
port = int(sys.argv[1]) if len(sys.argv) > 1 else PORT
psk = tunnel.psk_from_device_key(b'\x05' * 32, 'dev-udp')
t = udp_tunnel.Shard('tun'); t.start()
t.attach(psk, 'initiator', bind=('127.0.0.1', 0), peer=('127.0.0.1', port), keepalive_ms=200)
c = aes128_ctr.Shard('c'); c.start()
t.set_cipher(c)
got = []
sent = 0
deadline = platform.ticks_add(platform.ticks_ms(), 15000)
while platform.ticks_diff(deadline, platform.ticks_ms()) > 0:
    t.step()
    if t.ep.state == 'up' and sent < 5:
        sent += t.send(b'ping %d' % sent)
    m = t.recv()
    if m is not None:
        got.append(m.decode())
        if m == b'bye':
            break
    platform.sleep_ms(2)
print(json.dumps({'got': got, 'stats': t.health()}))
"""


def test_tunnel_between_micropython_device_and_cpython_host():
    sys.path.insert(0, FIRMWARE_DIR)
    try:
        from capdev.shards.vpn import tunnel
    finally:
        sys.path.remove(FIRMWARE_DIR)
    psk = tunnel.psk_from_device_key(b"\x05" * 32, "dev-udp")
    host = tunnel.Endpoint("responder", psk, keepalive_ms=200)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    port = sock.getsockname()[1]
    argv, env = fwrun.command("micropython", ["-c", DEVICE.replace("PORT", str(port))], heap_kb=96, compiled=True)
    dev = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        inner, to_device, peer = [], [], None
        deadline = time.monotonic() + 12
        while len(inner) < 5 and time.monotonic() < deadline:
            try:
                dgram, peer = sock.recvfrom(65535)
            except socket.timeout:
                continue
            first_data = tunnel.parse_header(dgram)[0] == tunnel.DATA and not inner
            if first_data:
                # a tampered copy of a fresh datagram first: dropped, and it must not
                # move the replay window (the genuine one is still accepted after it)
                bad = bytearray(dgram)
                bad[20] ^= 0x80
                assert host.receive(bytes(bad)) == (None, None)
            payload, reply = host.receive(dgram)
            if reply is not None:
                sock.sendto(reply, peer)
            if payload is not None:
                inner.append(payload.decode())
                out = host.send(b"pong " + payload[5:])
                to_device.append(out)
                sock.sendto(out, peer)
            if first_data:
                assert host.receive(dgram) == (None, None)  # the same datagram replayed
        assert inner == [f"ping {i}" for i in range(5)], dev.stderr.read() if dev.poll() else inner
        # host -> device: replay one datagram twice, send a tampered one, then a good bye
        sock.sendto(to_device[0], peer)
        sock.sendto(to_device[1], peer)
        bad = bytearray(host.send(b"forged?"))
        bad[-3] ^= 0x01
        sock.sendto(bytes(bad), peer)
        sock.sendto(host.send(b"bye"), peer)
        out, err = dev.communicate(timeout=20)
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
        sock.close()
    assert dev.returncode == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["got"] == [f"pong {i}" for i in range(5)] + ["bye"]
    st = r["stats"]
    assert st["replayed"] == 2 and st["tampered"] == 1 and st["state"] == "up"
    assert st["sent"] == 5 and st["received"] == 6
    assert host.stats["replayed"] == 1 and host.stats["tampered"] == 1
