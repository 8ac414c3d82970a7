"""capdev.mqtt.MqttClient against a real mosquitto, on MicroPython and CPython.

The firmware client runs as a subprocess (tests/firmware/scripts/mqtt_peer.py)
that reports events as JSON lines and takes commands on an MQTT control topic;
a paho-mqtt 2.x client in the test process is the other party.
"""

import json
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from capshard import fwrun
from capshard.broker import free_port

SCRIPT = str(Path(__file__).resolve().parents[1] / "firmware" / "scripts" / "mqtt_peer.py")

# Fast reconnects for tests; the defaults (0.5 s base, 1 s minimum, 30 s cap) suit a fleet.
FAST = {"base_backoff_ms": 100, "min_interval_ms": 300, "max_backoff_ms": 600,
        "connect_timeout_ms": 700, "retransmit_ms": 3000}


class FirmwarePeer:
    """The firmware MQTT client in a subprocess, seen through its JSON events."""

    def __init__(self, runtime, broker, workdir, name, subs=(), will=None, keepalive=30,
                 client=None):
        self.id = f"fw-{name}-{runtime}"
        self.ctl = f"ctl/{self.id}"
        cfg = {"host": broker.host, "port": broker.port, "id": self.id, "ctl": self.ctl,
               "keepalive": keepalive, "subs": [list(s) for s in subs], "will": will,
               "client": client or {}}
        # A file, not argv: MicroPython's unix port aborts on an argument of 256+ chars.
        cfg_path = Path(workdir) / f"{self.id}.json"
        cfg_path.write_text(json.dumps(cfg))
        self._err = tempfile.TemporaryFile(mode="w+")
        self.proc = fwrun.spawn(runtime, [SCRIPT, str(cfg_path)], stdout=subprocess.PIPE,
                                stderr=self._err, text=True)
        self.events = []
        self._used = set()
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"ev": "noise", "line": line}
            with self._cond:
                self.events.append(ev)
                self._cond.notify_all()

    def expect(self, ev, timeout=5.0, **match):
        """The first not yet taken event ``ev`` whose fields include ``match``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, e in enumerate(self.events):
                    if i not in self._used and e.get("ev") == ev and all(
                            e.get(k) == v for k, v in match.items()):
                        self._used.add(i)
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no {ev} {match} within {timeout}s from {self.id}; "
                        f"events: {self.events}; stderr: {self.stderr()}")
                self._cond.wait(left)

    def seen(self, ev, **match):
        with self._cond:
            return [e for e in self.events if e.get("ev") == ev
                    and all(e.get(k) == v for k, v in match.items())]

    def stderr(self):
        self._err.seek(0)
        return self._err.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self._err.close()


class PahoPeer:
    """paho-mqtt 2.x client; resubscribes after every (re)connect."""

    _n = 0

    def __init__(self, broker, subs=()):
        PahoPeer._n += 1
        self.subs = list(subs)
        self.msgs = queue.Queue()
        self.ready = threading.Event()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2,
                             client_id=f"paho-{os.getpid()}-{PahoPeer._n}", protocol=paho.MQTTv311)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda *a: self.ready.clear()
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_message = lambda c, u, m: self.msgs.put(m)
        self.c.reconnect_delay_set(0.1, 0.3)
        self.c.connect(broker.host, broker.port, keepalive=20)
        self.c.loop_start()
        assert self.ready.wait(5), "paho did not connect"

    def _on_connect(self, c, userdata, flags, reason, props):
        if self.subs:
            c.subscribe([(t, q) for t, q in self.subs])
        else:
            self.ready.set()

    def publish(self, topic, payload, qos=1, retain=False):
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(5)
        assert info.is_published()

    def command(self, fw, **cmd):
        self.publish(fw.ctl, json.dumps(cmd), qos=1)

    def expect(self, topic, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"paho got nothing on {topic} within {timeout}s")
            try:
                m = self.msgs.get(timeout=left)
            except queue.Empty:
                continue
            if m.topic == topic:
                return m

    def none_on(self, topic, wait):
        time.sleep(wait)
        got = []
        while not self.msgs.empty():
            m = self.msgs.get()
            if m.topic == topic:
                got.append(m.payload)
        return got

    def close(self):
        self.c.disconnect()  # wakes paho's loop thread, so loop_stop() returns at once
        self.c.loop_stop()


@pytest.fixture
def peers():
    made = []
    yield made
    for p in made:
        p.close()


def test_subscribe_receive_and_publish_qos0_qos1(runtime, broker, peers, tmp_path):
    paho_peer = PahoPeer(broker, subs=[("fw/out/#", 1), ("fw/will", 1)])
    peers.append(paho_peer)
    paho_peer.publish("fw/in/q1", b"kept", qos=1, retain=True)
    # Subscriptions made before connect() are sent when the connection comes up.
    fw = FirmwarePeer(runtime, broker, tmp_path, "basic", subs=[("fw/in/q0", 0), ("fw/in/q1", 1)],
                      will=["fw/will", "lost", 1, False])
    peers.append(fw)
    assert fw.expect("ready")["granted"] == 1
    assert fw.expect("msg", topic="fw/in/q1")["payload"] == "kept"
    assert fw.seen("msg", topic="fw/in/q1")[0]["retain"] is True

    paho_peer.publish("fw/in/q0", "zero", qos=0)
    paho_peer.publish("fw/in/q1", "one \u00e9", qos=1)
    assert fw.expect("msg", topic="fw/in/q0") == {
        "ev": "msg", "topic": "fw/in/q0", "payload": "zero", "retain": False}
    assert fw.expect("msg", topic="fw/in/q1")["payload"] == "one \u00e9"

    # A QoS 1 publish from the device reaches paho as QoS 1 and is acknowledged.
    paho_peer.command(fw, op="pub", topic="fw/out/state", payload="up", qos=1)
    m = paho_peer.expect("fw/out/state")
    assert (m.payload, m.qos) == (b"up", 1)
    assert fw.expect("acked")["ok"] is True

    # A live subscribe returns the granted QoS.
    paho_peer.command(fw, op="sub", topic="fw/in/late/+", qos=1)
    assert fw.expect("subscribed")["granted"] == 1
    paho_peer.publish("fw/in/late/x", "late", qos=1)
    assert fw.expect("msg", topic="fw/in/late/x")["payload"] == "late"

    # After an unsubscribe the broker sends nothing more on that filter.
    paho_peer.command(fw, op="unsub", topic="fw/in/late/+")
    fw.expect("unsubscribed")
    paho_peer.publish("fw/in/late/x", "after", qos=1)
    paho_peer.publish("fw/in/q0", "marker", qos=0)
    assert fw.expect("msg", topic="fw/in/q0")["payload"] == "marker"
    assert [e["payload"] for e in fw.seen("msg", topic="fw/in/late/x")] == ["late"]

    # A handler that raises is counted; the connection and later messages carry on.
    paho_peer.publish("fw/in/q1", "raise", qos=1)
    paho_peer.publish("fw/in/q1", "next", qos=1)
    assert fw.expect("msg", topic="fw/in/q1")["payload"] == "raise"
    assert fw.expect("msg", topic="fw/in/q1")["payload"] == "next"

    paho_peer.command(fw, op="stats")
    st = fw.expect("stats")
    assert (st["connects"], st["reconnects"], st["pending"], st["cb_errors"]) == (1, 0, 0, 1)

    # disconnect() sends DISCONNECT, so the broker discards the will.
    paho_peer.command(fw, op="quit")
    fw.expect("bye")
    assert paho_peer.none_on("fw/will", 0.5) == []


def test_last_will_delivered_when_device_is_killed(runtime, broker, peers, tmp_path):
    paho_peer = PahoPeer(broker, subs=[("fw/+/status", 1)])
    peers.append(paho_peer)
    fw = FirmwarePeer(runtime, broker, tmp_path, "will", will=["fw/d1/status", "offline", 1, True])
    peers.append(fw)
    fw.expect("ready")
    fw.proc.send_signal(signal.SIGKILL)
    m = paho_peer.expect("fw/d1/status", timeout=5)
    assert (m.payload, m.qos) == (b"offline", 1)
    # The will was retained: a later subscriber still finds it.
    late = PahoPeer(broker, subs=[("fw/d1/status", 0)])
    peers.append(late)
    m = late.expect("fw/d1/status")
    assert (m.payload, m.retain) == (b"offline", True)


def test_keepalive_pings_hold_an_idle_connection(runtime, broker, peers, tmp_path):
    paho_peer = PahoPeer(broker, subs=[("fw/will", 0)])
    peers.append(paho_peer)
    # Without traffic mosquitto drops a client after 1.5 x keepalive = 3 s,
    # and then publishes its will.
    fw = FirmwarePeer(runtime, broker, tmp_path, "ka", keepalive=2, will=["fw/will", "lost", 0, False])
    peers.append(fw)
    fw.expect("ready")
    assert paho_peer.none_on("fw/will", 4.5) == []
    paho_peer.command(fw, op="stats")
    st = fw.expect("stats")
    assert st["connects"] == 1 and st["reconnects"] == 0 and st["dead"] == 0
    assert st["connected"] is True
    # Pings every keepalive/4 = 0.5 s while idle.
    assert 5 <= st["pings"] <= 12, st


def _leave_stale_session(broker, client_id, topic):
    """A persistent session with a subscription, as a previous run might leave it."""
    subscribed = threading.Event()
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                    protocol=paho.MQTTv311)
    c.on_connect = lambda c, *a: c.subscribe(topic, 1)
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect(broker.host, broker.port)
    c.loop_start()
    assert subscribed.wait(5)
    c.disconnect()
    c.loop_stop()


def test_silent_broker_is_declared_dead_and_session_kept_across_outage(runtime, broker, peers,
                                                                        tmp_path):
    paho_peer = PahoPeer(broker)
    peers.append(paho_peer)
    _leave_stale_session(broker, f"fw-dead-{runtime}", "stale/#")
    # Clean at power-up (the stale subscription goes), kept after an outage.
    fw = FirmwarePeer(runtime, broker, tmp_path, "dead", keepalive=1, subs=[("fw/echo/#", 1)],
                      client=dict(FAST, clean_after_outage=False))
    peers.append(fw)
    assert fw.expect("connected")["sp"] is False
    fw.expect("ready")
    paho_peer.publish("stale/x", "should not arrive", qos=1)
    paho_peer.command(fw, op="pub_after_ms", ms=300, topic="fw/echo/x", payload="inflight", qos=1)
    fw.expect("cmd", op="pub_after_ms")  # the broker sent stale/x before this, had it matched
    assert fw.seen("msg", topic="stale/x") == []

    # A frozen broker keeps the TCP connection open but answers nothing.
    broker.proc.send_signal(signal.SIGSTOP)
    try:
        assert fw.expect("published", timeout=2)["connected"] is True  # sent, never acked
        down = fw.expect("down", timeout=3)
        assert "silent" in down["reason"]
        time.sleep(0.5)
    finally:
        broker.proc.send_signal(signal.SIGCONT)
    assert fw.expect("resynced", timeout=8)
    assert fw.seen("connected")[-1]["sp"] is True  # the broker kept the session
    assert fw.expect("acked", timeout=8)["ok"] is True
    # The subscription lived on in the kept session; the message was resent with DUP.
    assert fw.expect("msg", topic="fw/echo/x")["payload"] == "inflight"
    paho_peer.command(fw, op="stats")
    st = fw.expect("stats")
    assert st["dead"] >= 1 and st["reconnects"] >= 1
    assert st["retransmits"] >= 1
    assert st["pending"] == 0


def test_broker_restart_reconnects_resubscribes_and_loses_nothing(runtime, broker, peers, tmp_path):
    paho_peer = PahoPeer(broker)
    peers.append(paho_peer)
    fw = FirmwarePeer(runtime, broker, tmp_path, "restart", keepalive=5, subs=[("fw/echo/#", 1)],
                      client=FAST)
    peers.append(fw)
    fw.expect("ready")
    paho_peer.command(fw, op="pub_when_down", topic="fw/echo/outage", payload="no loss", qos=1)
    fw.expect("cmd", op="pub_when_down")

    broker.kill()
    killed = time.monotonic()
    # Seen by the socket (EOF or reset), well before the keepalive would notice.
    reason = fw.expect("down", timeout=3)["reason"]
    assert "closed" in reason or "reset" in reason.lower(), reason
    queued = fw.expect("published", timeout=3)
    assert queued["connected"] is False and queued["pending"] == 1
    time.sleep(1.2)
    broker.start()
    outage = time.monotonic() - killed

    # Resubscription goes out before the queued message on the same connection,
    # so the device receives its own message back through the new broker.
    assert fw.expect("msg", topic="fw/echo/outage", timeout=5)["payload"] == "no loss"
    assert fw.expect("acked", timeout=5)["ok"] is True
    fw.expect("resynced", timeout=5)
    # Third-party traffic reaches the restored subscription too.
    assert paho_peer.ready.wait(5)
    paho_peer.publish("fw/echo/after", "after", qos=1)
    assert fw.expect("msg", topic="fw/echo/after")["payload"] == "after"

    paho_peer.command(fw, op="stats")
    st = fw.expect("stats")
    assert st["reconnects"] == 1 and st["pending"] == 0
    # Attempts failed while the broker was away, but no faster than the
    # 300 ms minimum interval allows: backoff, not a reconnect storm.
    assert 1 <= st["failures"] <= outage / 0.3 + 1, (st, outage)


def test_connect_without_broker_fails_with_reason_and_paces_attempts(fw):
    port = free_port()  # nothing listens here
    code = f"""
import asyncio, json
from capdev.mqtt import MqttClient, MqttError
async def main():
    c = MqttClient('127.0.0.1', {port}, 'nobody', base_backoff_ms=50, min_interval_ms=200,
                   max_backoff_ms=100)
    try:
        await c.connect(1000)
        reason = None
    except MqttError as e:
        reason = e.reason
    failures = c.counters['failures']
    pid = await c.publish('t/q1', b'x', 1)  # kept for the next connection
    await c.publish('t/q0', b'y', 0)  # at most once: dropped while offline
    await c.disconnect()
    print(json.dumps([reason, failures, pid, c.pending(), c.counters['dropped'], c.connected]))
asyncio.run(main())
"""
    reason, failures, pid, pending, dropped, connected = fw.run_json(code)
    assert "not connected after 1000 ms" in reason and "111" in reason  # ECONNREFUSED
    # One attempt at once, then no more than one per 200 ms minimum interval.
    assert 2 <= failures <= 6
    assert (pid, pending, dropped, connected) == (1, 1, 1, False)
