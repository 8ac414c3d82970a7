"""A test-side provider stand-in: watches every device topic and signs
instructions with a device's own key, so a test controls exactly what a
device receives (good, forged, replayed, ...) and sees every ack and state."""

import os
import threading
import time

import cbor2
import paho.mqtt.client as mqtt

from capshard import localdev, wire
from capshard.keys import Keystore
from capshard.service.policy import MINIMAL_BASELINE

BASELINE_OP = MINIMAL_BASELINE[0]


class Watcher:
    def __init__(self, host, port):
        self.msgs = []  # (monotonic time, device id, kind, decoded message or None)
        self.cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{os.getpid()}-{id(self)}")
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe("capshard/v1/dev/+/+", qos=1)
        self.c.on_message = self._on_message
        self.c.connect(host, port, keepalive=10)
        self.c.loop_start()

    def _on_message(self, c, u, m):
        parts = m.topic.split("/")
        try:
            msg = cbor2.loads(m.payload)
        except Exception:
            msg = None
        with self.cond:
            self.msgs.append((time.monotonic(), parts[3], parts[4], msg))
            self.cond.notify_all()

    def mark(self):
        with self.cond:
            return len(self.msgs)

    def since(self, mark, dev, kind):
        with self.cond:
            return [m for _, d, k, m in self.msgs[mark:] if d == dev and k == kind and m is not None]

    def wait(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = predicate()
                if v or time.monotonic() > deadline:
                    return v
                self.cond.wait(min(0.2, max(0.01, deadline - time.monotonic())))

    def publish(self, topic, payload):
        self.c.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


class Device:
    """A real agent in ``directory`` plus what the test needs to instruct it."""

    def __init__(self, device_id, directory, broker, runtime="cpython", keystore=None, heap_kb=128,
                 code="romfs", board_overrides=None, env=None):
        self.id = device_id
        self.dir = directory
        self.runtime, self.heap_kb, self.code = runtime, heap_kb, code
        self.keystore = keystore or Keystore()
        overrides = {"traffic_sources": []}
        overrides.update(board_overrides or {})
        localdev.provision_dir(directory, self.keystore, device_id, broker.host, broker.port,
                               board_overrides=overrides)
        self.kid, self.key = self.keystore.get(device_id)
        self.seq = 0
        self.proc = None

    def start(self):
        self.proc = localdev.spawn_agent(self.runtime, self.dir, heap_kb=self.heap_kb, code=self.code)
        return self

    def kill9(self):
        os.killpg(self.proc.pid, 9)
        self.proc.wait()

    def stop(self):
        if self.proc is not None:
            localdev.stop(self.proc)

    def log(self):
        return localdev.read_log(self.proc) if self.proc else ""

    def payload(self, ops, seq=None, full=True, iat=None, ttl_s=60, inst_id=None, **extra):
        if seq is None:
            self.seq += 1
            seq = self.seq
        p = wire.make_instruction(self.id, seq, ops, full, iat if iat is not None else time.time(),
                                  ttl_s=ttl_s, instruction_id=inst_id)
        p.update(extra)
        return p

    def sign(self, payload, key=None, kid=None):
        return wire.sign_instruction(payload, key or self.key, kid or self.kid)

    @property
    def topic(self):
        return wire.topic(self.id, wire.INSTRUCTION)

    def persisted(self):
        import json

        with open(os.path.join(self.dir, "cmm-state.json")) as f:
            return json.load(f)


def baseline(cpu=10, **kw):
    op = dict(BASELINE_OP, cpu=cpu)
    op.update(kw)
    return op


def lease_op(shard="counter", dur_s=60, **kw):
    op = {"op": "activate", "shard": shard, "ver": "1.0", "slot": "test.counter",
          "module": "capdev.shards.counter", "cpu": 5, "mem_kb": 4, "bw_kbps": 0,
          "prio": "low", "dur_s": dur_s, "alt": None}
    op.update(kw)
    return op


def send_and_ack(watcher, dev, raw, timeout=20, inst_id=None):
    """Publish ``raw`` and return the ack that answers it (matched by id when given)."""
    mark = watcher.mark()
    watcher.publish(dev.topic, raw)

    def got():
        acks = watcher.since(mark, dev.id, "ack")
        if inst_id is not None:
            acks = [a for a in acks if a.get("id") == inst_id]
        return acks[0] if acks else None

    ack = watcher.wait(got, timeout)
    assert ack, f"no ack from {dev.id} within {timeout}s\n{dev.log()[-3000:]}"
    return ack


def wait_online(watcher, dev, timeout=30, mark=0):
    """Wait for a birth published after ``mark`` (the device has subscribed by then)."""
    def born():
        return watcher.since(mark, dev.id, "birth")
    assert watcher.wait(born, timeout), dev.log()[-3000:]
