"""Many lightweight protocol devices in one asyncio process, for the e2e and
fleet benchmarks. Each speaks the real wire protocol over its own MQTT 3.1.1
connection: birth, receive the COSE_Mac0 instruction, verify its HMAC with
the device's key, apply the ops to its profile, ack, publish its retained
state. Then it sends QoS reports that alternate between two needs (so every
report changes the plan) and times each until the instruction it caused.

    python simdevices.py HOST PORT KEYS.json PREFIX N MODE SECONDS

MODE "e2e": each device reports every ``--period`` seconds (random phase);
MODE "fleet": closed loop, the next report right after the ack.
Prints one JSON line: per report, the device's send time (wall clock) and the
id of the instruction it caused; the bench joins them with the ack times the
provider recorded.
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import random
import socket
import struct
import sys
import time

import cbor2

PREFIX = "capshard/v1/dev/"
NEEDS = (
    {"real-time-interactive": {"bw_kbps": 300, "lat_ms": 50, "flows": 2, "conf": 90}},
    {"multimedia-streaming": {"bw_kbps": 6000, "lat_ms": None, "flows": 3, "conf": 80}},
)
SECURITY = ({"level": "none", "dests": []}, {"level": "confidentiality", "dests": ["bank.example"]})
CODES = {"activate": "activated", "deactivate": "deactivated", "adjust": "adjusted"}


def _varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def _packet(first, body):
    return bytes([first]) + _varint(len(body)) + body


class SimDevice:
    def __init__(self, device_id, key, kid, host, port, stats):
        self.id, self.key, self.kid = device_id, key, kid
        self.host, self.port = host, port
        self.stats = stats
        self.profile = {}
        self.last_seq = 0
        self.report_seq = 0
        self.pid = 0
        self.synced = asyncio.Event()
        self.waiting = None      # (sent_at, future) of the report in flight
        self.writer = None

    def _pid(self):
        self.pid = self.pid % 65535 + 1
        return self.pid

    def publish(self, kind, obj, retain=False):
        body = _str(PREFIX + self.id + "/" + kind) + struct.pack("!H", self._pid()) + cbor2.dumps(obj)
        self.writer.write(_packet(0x32 | (1 if retain else 0), body))

    async def connect(self):
        reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        will = cbor2.dumps({"v": 1, "dev": self.id, "online": False})
        flags = 0x02 | 0x04 | 0x08 | 0x20  # clean session, will (QoS 1, retained)
        body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", 120) + _str(self.id) + \
            _str(PREFIX + self.id + "/state") + _str(will)
        self.writer.write(_packet(0x10, body))
        self.writer.write(_packet(0x82, struct.pack("!H", self._pid()) + _str(PREFIX + self.id + "/inst") + b"\x01"))
        self.publish("birth", {"v": 1, "dev": self.id, "board": "simulated", "fw": "sim", "runtime": "cpython",
                               "caps": {"cpu": 100, "mem_kb": 300, "bw_kbps": 20000},
                               "last_seq": self.last_seq, "heap_free": None, "heap_used": None})
        await self.writer.drain()
        asyncio.get_running_loop().create_task(self.read_loop(reader))

    async def read_loop(self, reader):
        try:
            while True:
                head = await reader.readexactly(1)
                n, shift = 0, 0
                while True:
                    b = (await reader.readexactly(1))[0]
                    n |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                body = await reader.readexactly(n) if n else b""
                if head[0] & 0xF0 == 0x30:
                    self.on_publish(head[0], body)
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    def on_publish(self, first, body):
        tlen = struct.unpack_from("!H", body)[0]
        pos = 2 + tlen
        if (first >> 1) & 3:
            pid = body[pos:pos + 2]
            pos += 2
            self.writer.write(b"\x40\x02" + pid)
        received = time.time()
        payload = self.verify(body[pos:])
        if payload is None:
            self.stats["bad_mac"] += 1
            return
        inst = cbor2.loads(payload)
        if inst["seq"] <= self.last_seq:
            return  # a redelivery: our ack went out already
        self.last_seq = inst["seq"]
        if inst["full"]:
            self.profile = {}
        results = []
        for op in inst["ops"]:
            if op["op"] == "deactivate":
                self.profile.pop(op["shard"], None)
            else:
                self.profile[op["shard"]] = op
            results.append({"shard": op["shard"], "op": op["op"], "code": CODES[op["op"]], "reason": ""})
        self.publish("ack", {"v": 1, "dev": self.id, "id": inst["id"], "seq": inst["seq"], "status": "applied",
                             "reason": "", "results": results})
        self.publish("state", {"v": 1, "dev": self.id, "online": True, "seq": inst["seq"],
                               "profile": self.profile, "shards": {}}, retain=True)
        self.stats["instructions"] += 1
        if inst.get("rebirth"):
            self.publish("birth", {"v": 1, "dev": self.id, "board": "simulated", "fw": "sim", "runtime": "cpython",
                                   "caps": {"cpu": 100, "mem_kb": 300, "bw_kbps": 20000},
                                   "last_seq": self.last_seq, "heap_free": None, "heap_used": None})
        if inst["full"] and not self.synced.is_set():
            self.synced.set()
        elif self.waiting is not None and not self.waiting[1].done():
            self.waiting[1].set_result((inst["id"], received))

    def verify(self, data):
        """COSE_Mac0 (tag 17), HMAC 256/256 over the MAC_structure."""
        try:
            msg = cbor2.loads(data)
            protected, _, payload, tag = msg.value
        except Exception:
            return None
        mac_structure = cbor2.dumps(["MAC0", protected, b"", payload])
        good = hmac.new(self.key, mac_structure, hashlib.sha256).digest()
        return payload if hmac.compare_digest(good, tag) else None

    async def report(self, timeout=10.0):
        """Send the other needs; returns (sent_at, instruction id) or None."""
        self.report_seq += 1
        which = self.report_seq % 2
        fut = asyncio.get_running_loop().create_future()
        sent = time.time()
        self.waiting = (sent, fut)
        self.publish("qos", {"v": 1, "dev": self.id, "seq": self.report_seq, "t": int(sent),
                             "classes": NEEDS[which], "security": SECURITY[which]})
        try:
            inst_id, _ = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            self.stats["lost"] += 1
            return None
        finally:
            self.waiting = None
        return sent, inst_id


async def main(a):
    with open(a.keys) as f:
        keys = json.load(f)
    ids = sorted(k for k in keys if k.startswith(a.prefix))[:a.n]
    stats = {"instructions": 0, "lost": 0, "bad_mac": 0}
    devs = [SimDevice(i, bytes.fromhex(keys[i]["key"]), keys[i]["kid"], a.host, a.port, stats) for i in ids]
    for i in range(0, len(devs), 50):  # connect in waves: the broker's accept backlog is finite
        await asyncio.gather(*(d.connect() for d in devs[i:i + 50]))
    await asyncio.wait_for(asyncio.gather(*(d.synced.wait() for d in devs)), 120)
    print(json.dumps({"ready": len(devs)}), flush=True)
    # wait for the bench to say go (it starts timing then)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    samples = []
    end = time.monotonic() + a.seconds

    async def drive(d):
        rng = random.Random(d.id)
        if a.mode == "e2e":
            await asyncio.sleep(rng.uniform(0, a.period))
        while time.monotonic() < end:
            started = time.monotonic()
            got = await d.report()
            if got is not None:
                samples.append(got)
            if a.mode == "e2e":
                await asyncio.sleep(max(0.0, a.period - (time.monotonic() - started)))
            else:
                await asyncio.sleep(0)

    t0 = time.time()
    await asyncio.gather(*(drive(d) for d in devs))
    t1 = time.time()
    print(json.dumps({"samples": samples, "t0": t0, "t1": t1, **stats}), flush=True)
    for d in devs:
        d.writer.write(b"\xe0\x00")  # DISCONNECT: no last will
    await asyncio.sleep(0.2)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("keys")
    p.add_argument("prefix")
    p.add_argument("n", type=int)
    p.add_argument("mode", choices=("e2e", "fleet"))
    p.add_argument("seconds", type=float)
    p.add_argument("--period", type=float, default=2.0)
    asyncio.run(main(p.parse_args()))
