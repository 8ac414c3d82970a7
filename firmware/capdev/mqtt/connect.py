# The connection set-up half of MqttClient: the CONNECT/CONNACK handshake,
# restoring the session on a new connection, and (un)subscribing. Each is a
# function of the client, so a device pays heap for this code only while it
# connects: client.py imports it at the call site and the agent unloads it
# again (agent.COLD). Nothing here may be kept by the client (no stored
# function, class or task of this module), or unloading would not free it.
import asyncio

from capdev import platform
from capdev.mqtt import packets as P
from capdev.mqtt.client import _RX_CHUNK, MqttError

_SUBS_PER_PACKET = 8  # keeps resubscribe packets small on a constrained heap


async def establish(c):
    """Connect, restore the session and mark ``c`` connected; raises on failure."""
    if c._power_up and c.clean_session and not c.clean_after_outage:
        # mqtt_as lesson: wipe what a previous run left at the broker, then
        # open a session the broker keeps across outages. 3.1.1 can only do
        # that with a clean connection followed by a persistent one.
        await handshake(c, True)
        await c._send(P.DISCONNECT)
        await c._close_stream()
        c._power_up = False
    clean = c.clean_session if c._power_up else c.clean_after_outage
    ack = await handshake(c, clean)
    conn = c._conn_no
    c._power_up = False
    c.session_present = ack.session_present
    now = platform.ticks_ms()
    c._last_rx = c._last_tx = c._last_ping = now
    c._rx_task = asyncio.create_task(c._rx_loop(conn))
    await sync_session(c, conn)
    if c._lost is not None:
        raise MqttError(c._lost)
    # No await between the last sync check and here: nothing can slip past.
    c.connected = True
    c.connected_event.set()
    c.counters["connects"] += 1
    if c.counters["connects"] > 1:
        c.counters["reconnects"] += 1
    if c.on_connect is not None:
        # The task runs a method of the client, not a function of this module:
        # a finished task stays in _cb_tasks and would keep this module loaded.
        c._cb_tasks = [t for t in c._cb_tasks if not t.done()]
        c._cb_tasks.append(asyncio.create_task(c._call_on_connect(ack.session_present)))


async def handshake(c, clean):
    """Open the socket, send CONNECT, return the accepting CONNACK."""
    c._conn_no += 1
    conn = c._conn_no
    c._lost = None
    c._parser = P.Parser(c.max_packet_size)
    t = c.connect_timeout_ms / 1000
    c._reader, c._writer = await asyncio.wait_for(
        asyncio.open_connection(c.host, c.port, ssl=c.ssl), t)
    if not await c._send(connect_packet(c, clean), conn):
        raise MqttError(c._lost or "CONNECT not sent")
    ack = await asyncio.wait_for(read_connack(c), t)
    if ack.code:
        raise MqttError("connection refused: %s (code %d)"
                        % (P.CONNACK_REASONS.get(ack.code, "reserved code"), ack.code))
    return ack


def connect_packet(c, clean):
    """The CONNECT to send. The client holds the clean-session one; for a
    session the broker keeps, a copy with that flag (0x02 of the connect
    flags, spec 3.1.2.4) cleared."""
    pkt = c._connect
    if clean:
        return pkt
    pkt = bytearray(pkt)
    at = 1
    while pkt[at] & 0x80:  # the remaining length takes 1 to 4 bytes
        at += 1
    pkt[at + 8] &= ~0x02  # after it: name length (2), "MQTT" (4), level (1), flags
    return pkt


async def read_connack(c):
    while True:
        p = c._parser.next_packet()
        if p is not None:
            if p.type != P.CONNACK:
                raise P.MqttProtocolError("expected CONNACK, got packet type %d" % p.type)
            return p
        data = await c._reader.read(_RX_CHUNK)
        if not data:
            raise MqttError("connection closed before CONNACK")
        c.counters["rx_bytes"] += len(data)
        c._parser.feed(data)


async def sync_session(c, conn):
    """Restore subscriptions and resend unacknowledged messages (with DUP)."""
    sp = c.session_present
    if sp and c._unsubs:
        topics = list(c._unsubs)
        await c._send(P.encode_unsubscribe(c._new_pid(), topics), conn)
    c._unsubs = set()
    # Loop until nothing is left, so work queued meanwhile is not missed.
    while c._lost is None:
        todo = []
        for topic, e in c._subs.items():
            # With a kept session the broker still holds what it was sent before.
            if e[1] != conn and not (sp and e[1]):
                todo.append((topic, e[0]))
                e[1] = conn
                if len(todo) == _SUBS_PER_PACKET:
                    break
        if todo:
            await c._send(P.encode_subscribe(c._new_pid(), todo), conn)
            continue
        first = None
        for e in c._outbox.values():
            if e[2] != conn and (first is None or e[0] < first[0]):
                first = e
        if first is None:
            return
        if first[2]:
            first[1][0] |= 0x08  # DUP: this one went out on an earlier connection
            c.counters["retransmits"] += 1
        first[2] = conn
        first[3] = platform.ticks_ms()
        await c._send(first[1], conn)


async def subscribe(c, topic, qos):
    """MqttClient.subscribe: the granted QoS, or None (sent again on the next connection)."""
    P.encode_subscribe(1, [(topic, qos)])  # validate before remembering it
    entry = [qos, 0]
    c._subs[topic] = entry
    c._unsubs.discard(topic)
    if not c.connected:
        return None
    conn = c._conn_no
    entry[1] = conn
    codes = await request(c, P.encode_subscribe, [(topic, qos)], conn)
    if codes is None:
        if c._subs.get(topic) is entry:
            entry[1] = 0
        return None
    if codes[0] == P.SUBACK_FAILURE:
        if c._subs.get(topic) is entry:
            del c._subs[topic]
        raise MqttError("subscription to %s refused" % topic)
    return codes[0]


async def unsubscribe(c, topic):
    """MqttClient.unsubscribe: True once the broker confirmed it."""
    P.encode_unsubscribe(1, [topic])
    c._subs.pop(topic, None)
    if not c.connected:
        c._unsubs.add(topic)
        return False
    if await request(c, P.encode_unsubscribe, [topic], c._conn_no) is None:
        c._unsubs.add(topic)
        return False
    return True


async def request(c, encode, topics, conn):
    """Send SUBSCRIBE/UNSUBSCRIBE and wait for its ack; None if none came."""
    pid = c._new_pid()
    w = [asyncio.Event(), None]
    c._waiters[pid] = w
    if await c._send(encode(pid, topics), conn):
        try:
            await asyncio.wait_for(w[0].wait(), c.connect_timeout_ms / 1000)
        except asyncio.TimeoutError:
            pass
    c._waiters.pop(pid, None)
    return w[1]
