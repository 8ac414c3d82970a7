# Portable MQTT 3.1.1 client on asyncio streams (MicroPython unix port and CPython).
#
# Resilience follows mqtt_as: QoS 1 messages stay in an outbox until PUBACK and
# are retransmitted with DUP; pings go out at a quarter of the keepalive and the
# broker is declared dead after a keepalive without any packet from it; the
# client reconnects forever with jittered exponential backoff, resubscribes and
# resends what is unacknowledged. Bytes on the wire come from packets.py;
# connecting, restoring the session and (un)subscribing are in connect.py,
# imported when used so a device can unload them while connected.
import asyncio

from capdev import platform
from capdev.mqtt import packets as P
from capdev.mqtt.backoff import Backoff
from capdev.platform import const

_RX_CHUNK = 512

# Error texts: line n of _TEXTS for text number n, with "%s"/"%d" filled in
# by _text(). One string constant: as separate messages they were a heap
# object each on a board.
_T_EMPTY_ID = const(0)
_T_NOT_CONNECTED = const(1)
_T_DISCONNECTED = const(2)
_T_PUBLISH_SIZE = const(3)
_T_OUTBOX_FULL = const(4)
_T_SILENT = const(5)
_T_CLOSED = const(6)
_T_RESUBSCRIBE = const(7)
_T_SECOND_CONNACK = const(8)
_T_SEND_FAILED = const(9)
_T_NO_PID = const(10)
_TEXTS = (
    "an empty client id needs clean sessions\n"
    "not connected after %d ms (%s)\n"
    "disconnected by client\n"
    "publish of %d bytes exceeds the %d-byte limit\n"
    "outbox full (%d unacknowledged)\n"
    "broker silent for %d ms\n"
    "connection closed by broker\n"
    "resubscription refused by broker\n"
    "second CONNACK\n"
    "send failed: %s\n"
    "no free packet id"
)


# One copy of this small helper per module that keeps a text table, on
# purpose: a shared module for it cost 2 KiB of steady heap (performance.md).
def _text(n, args=None):
    """Text number ``n`` (a _T_ number), with ``args`` filled in."""
    text = _TEXTS.split("\n")[n]
    return text if args is None else text % args


class MqttError(Exception):
    """Refused connection or subscription, full outbox, connect timeout."""

    @property
    def reason(self):
        return self.args[0] if self.args else ""


def _describe(e):
    return "%s: %s" % (type(e).__name__, e)


def _maybe_await(r):
    # Callbacks may be plain functions or coroutine functions.
    return r is not None and hasattr(r, "send")


class MqttClient:
    def __init__(self, host, port, client_id, user=None, password=None, keepalive=30,
                 will=None, clean_session=True, clean_after_outage=None,
                 max_backoff_ms=30000, base_backoff_ms=500, min_interval_ms=1000,
                 connect_timeout_ms=5000, retransmit_ms=5000, ping_interval_ms=None,
                 dead_after_ms=None, max_packet_size=P.DEFAULT_MAX_PACKET, max_outbox=32,
                 on_message=None, on_connect=None, random_below=None, ssl=None):
        self.host = host
        self.port = port
        self.ssl = ssl  # an ssl.SSLContext for MQTT over TLS, or None for plain TCP
        self.keepalive = keepalive
        # mqtt_as lesson: a fresh session at power-up, but keep the broker's
        # session (queued QoS 1 messages) across outages if asked to.
        self.clean_session = clean_session
        self.clean_after_outage = clean_session if clean_after_outage is None else clean_after_outage
        if not client_id and not (clean_session and self.clean_after_outage):
            raise P.MqttProtocolError(_text(_T_EMPTY_ID))
        # The CONNECT is built now, so bad settings fail at construction. One
        # packet is kept: a persistent session's differs only in one flag
        # (connect.connect_packet).
        self._connect = P.encode_connect(client_id, user, password, True, keepalive, will)
        self.connect_timeout_ms = connect_timeout_ms
        self.retransmit_ms = retransmit_ms
        self.ping_interval_ms = ping_interval_ms or max(keepalive * 250, 100)
        self.dead_after_ms = dead_after_ms or keepalive * 1000
        self.max_packet_size = max_packet_size
        self.max_outbox = max_outbox
        self.on_message = on_message
        self.on_connect = on_connect
        self._backoff = Backoff(base_backoff_ms, max_backoff_ms, min_interval_ms, random_below)
        # Housekeeping period: fine enough for pings and retransmits, no finer.
        self._tick_ms = max(50, min(1000, retransmit_ms // 4,
                                    self.ping_interval_ms // 4 if keepalive else 1000))

        self.connected = False
        self.connected_event = asyncio.Event()
        self.session_present = False
        self.last_error = None
        self.counters = {
            "connects": 0, "reconnects": 0, "failures": 0, "retransmits": 0,
            "pings": 0, "dead": 0, "rx": 0, "tx": 0, "rx_bytes": 0, "tx_bytes": 0,
            "dropped": 0, "cb_errors": 0,
        }

        self._subs = {}  # topic -> [qos, connection number it was last sent on (0 = never)]
        self._unsubs = set()  # removed while offline: the broker's session may still hold them
        self._outbox = {}  # pid -> [seq, packet bytearray, connection number, sent ticks]
        self._waiters = {}  # pid -> [Event, SUBACK codes or [] for UNSUBACK]
        self._ack_ev = asyncio.Event()
        self._lock = asyncio.Lock()  # one writer at a time on the stream
        self._pid = 0
        self._seq = 0
        self._conn_no = 0
        self._power_up = True
        self._closing = False
        self._lost = None  # reason the current connection ended, None while alive
        self._reader = None
        self._writer = None
        self._parser = None
        self._task = None
        self._rx_task = None
        self._cb_tasks = []  # on_connect runs; CPython holds tasks only weakly
        self._last_rx = self._last_tx = self._last_ping = platform.ticks_ms()

    # ---- public API ---------------------------------------------------------
    async def connect(self, timeout_ms=None):
        """Start the connection loop and wait until connected.

        The loop keeps reconnecting until disconnect(); with ``timeout_ms`` this
        raises MqttError (carrying the last failure) if not connected in time.
        """
        self._closing = False
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        if timeout_ms is None:
            await self.connected_event.wait()
            return
        try:
            await asyncio.wait_for(self.connected_event.wait(), timeout_ms / 1000)
        except asyncio.TimeoutError:
            raise MqttError(_text(_T_NOT_CONNECTED, (timeout_ms, self.last_error)))

    async def disconnect(self):
        """Send DISCONNECT (the broker then drops the will) and stop reconnecting."""
        self._closing = True
        if self.connected:
            await self._send(P.DISCONNECT)
        task = self._task
        self._task = None
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
        self._drop(_text(_T_DISCONNECTED))
        await self._close_stream()

    async def publish(self, topic, payload, qos=0, retain=False):
        """Send a message; returns its packet id (0 for QoS 0).

        QoS 1 is queued in the outbox until PUBACK, also while offline (it goes
        out on reconnect); a QoS 0 message while offline is dropped and counted.
        """
        pid = self._new_pid() if qos == 1 else None
        pkt = P.encode_publish(topic, payload, qos, retain, False, pid)
        if len(pkt) > self.max_packet_size:
            raise P.MqttProtocolError(_text(_T_PUBLISH_SIZE, (len(pkt), self.max_packet_size)))
        if qos == 0:
            if not (self.connected and await self._send(pkt)):
                self.counters["dropped"] += 1
            return 0
        if len(self._outbox) >= self.max_outbox:
            raise MqttError(_text(_T_OUTBOX_FULL, len(self._outbox)))
        self._seq += 1
        entry = [self._seq, pkt, 0, 0]
        self._outbox[pid] = entry
        if self.connected:
            conn = self._conn_no
            entry[2] = conn
            entry[3] = platform.ticks_ms()
            await self._send(pkt, conn)  # on failure it stays queued for the next connection
        return pid

    def pending(self):
        """Number of QoS 1 messages not yet acknowledged."""
        return len(self._outbox)

    async def wait_acked(self, pid=None, timeout_ms=None):
        """Wait until message ``pid`` (or every queued message) is acknowledged."""
        start = platform.ticks_ms()
        while (pid in self._outbox) if pid is not None else self._outbox:
            ev = self._ack_ev
            if timeout_ms is None:
                await ev.wait()
                continue
            left = timeout_ms - platform.ticks_diff(platform.ticks_ms(), start)
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(ev.wait(), left / 1000)
            except asyncio.TimeoutError:
                pass
        return True

    async def subscribe(self, topic, qos=0):
        """Subscribe now and on every later connection.

        Returns the granted QoS, or None when offline or when the SUBACK did not
        arrive (the subscription is then sent on the next connection).
        Raises MqttError if the broker refuses it.
        """
        import capdev.mqtt.connect  # cold: see connect.py

        return await capdev.mqtt.connect.subscribe(self, topic, qos)

    async def unsubscribe(self, topic):
        """Forget a subscription; True once the broker confirmed it."""
        import capdev.mqtt.connect

        return await capdev.mqtt.connect.unsubscribe(self, topic)

    # ---- connection loop ----------------------------------------------------
    async def _run(self):
        last_attempt = None
        while not self._closing:
            if last_attempt is not None:
                since = platform.ticks_diff(platform.ticks_ms(), last_attempt)
                await asyncio.sleep(self._backoff.next_delay_ms(since) / 1000)
                if self._closing:
                    break
            last_attempt = platform.ticks_ms()
            try:
                # Set-up code is imported per attempt and not held here, so
                # the agent can unload it while the connection lasts.
                import capdev.mqtt.connect

                await capdev.mqtt.connect.establish(self)
            except Exception as e:  # OSError, timeouts, refusals, protocol errors
                self.counters["failures"] += 1
                self._drop(_describe(e))
                await self._close_stream()
                continue
            self._backoff.reset()
            await self._serve()
            await self._close_stream()

    async def _serve(self):
        """Keepalive and retransmission while the connection lasts."""
        conn = self._conn_no
        while self._lost is None and not self._closing:
            await asyncio.sleep(self._tick_ms / 1000)
            if self._lost is not None or self._closing:
                return
            now = platform.ticks_ms()
            if self.keepalive:
                since_rx = platform.ticks_diff(now, self._last_rx)
                if since_rx >= self.dead_after_ms:
                    self.counters["dead"] += 1
                    self._drop(_text(_T_SILENT, since_rx))
                    return
                iv = self.ping_interval_ms
                # Ping when idle either way: the broker needs to hear from us,
                # and we need to hear from it to know it is alive.
                if platform.ticks_diff(now, self._last_ping) >= iv and (
                        since_rx >= iv or platform.ticks_diff(now, self._last_tx) >= iv):
                    self._last_ping = now
                    self.counters["pings"] += 1
                    await self._send(P.PINGREQ, conn)
            due = []
            for e in self._outbox.values():
                if e[2] == conn and platform.ticks_diff(now, e[3]) >= self.retransmit_ms:
                    due.append(e)
            due.sort()
            for e in due:
                e[1][0] |= 0x08
                e[3] = now
                self.counters["retransmits"] += 1
                if not await self._send(e[1], conn):
                    break

    async def _rx_loop(self, conn):
        reader = self._reader
        parser = self._parser
        reason = _text(_T_CLOSED)
        try:
            while True:
                p = parser.next_packet()
                if p is None:
                    data = await reader.read(_RX_CHUNK)
                    if not data:
                        break
                    self.counters["rx_bytes"] += len(data)
                    parser.feed(data)
                    continue
                self._last_rx = platform.ticks_ms()
                self.counters["rx"] += 1
                await self._dispatch(p, conn)
        except Exception as e:  # OSError, MqttProtocolError
            reason = _describe(e)
        if conn == self._conn_no:
            self._drop(reason)

    async def _dispatch(self, p, conn):
        t = p.type
        if t == P.PUBLISH:
            cb = self.on_message
            if cb is not None:
                try:
                    r = cb(p.topic, p.payload, p.retain)
                    if _maybe_await(r):
                        await r
                except Exception as e:
                    # Ack anyway: a message that always crashes the handler must
                    # not be redelivered forever. A device crash mid-handler
                    # leaves it unacknowledged, so the broker redelivers it.
                    self.counters["cb_errors"] += 1
                    platform.print_exception(e)
            if p.qos:
                await self._send(P.encode_puback(p.pid), conn)
        elif t == P.PUBACK:
            if self._outbox.pop(p.pid, None) is not None:
                ev = self._ack_ev
                self._ack_ev = asyncio.Event()
                ev.set()
        elif t == P.SUBACK or t == P.UNSUBACK:
            w = self._waiters.pop(p.pid, None)
            if w is not None:
                w[1] = p.granted if t == P.SUBACK else []
                w[0].set()
            elif t == P.SUBACK and P.SUBACK_FAILURE in p.granted:
                self.last_error = _text(_T_RESUBSCRIBE)
        elif t == P.CONNACK:
            raise P.MqttProtocolError(_text(_T_SECOND_CONNACK))
        # PINGRESP: receiving it already refreshed _last_rx.

    # ---- helpers ------------------------------------------------------------
    async def _send(self, pkt, conn=None):
        """Write one packet on connection ``conn``; False (and the connection
        dropped) if it could not be written."""
        async with self._lock:
            if conn is None:
                conn = self._conn_no
            w = self._writer
            if conn != self._conn_no or self._lost is not None or w is None:
                return False
            try:
                w.write(pkt)
                await asyncio.wait_for(w.drain(), self.connect_timeout_ms / 1000)
            except Exception as e:
                if conn == self._conn_no:
                    self._drop(_text(_T_SEND_FAILED, _describe(e)))
                return False
        self._last_tx = platform.ticks_ms()
        self.counters["tx"] += 1
        self.counters["tx_bytes"] += len(pkt)
        return True

    def _new_pid(self):
        for _ in range(65535):
            self._pid = self._pid % 65535 + 1
            if self._pid not in self._outbox and self._pid not in self._waiters:
                return self._pid
        raise MqttError(_text(_T_NO_PID))

    def _drop(self, reason):
        """Mark the current connection dead and close its socket (idempotent)."""
        if self._lost is None:
            self._lost = reason
            self.last_error = reason
        if self.connected:
            self.connected = False
            self.connected_event.clear()
        w = self._writer
        if w is not None:
            try:
                w.close()
            except Exception:
                pass
        for pid in list(self._waiters):  # wake subscribe()/unsubscribe() callers
            self._waiters.pop(pid)[0].set()

    async def _close_stream(self):
        t = self._rx_task
        self._rx_task = None
        if t is not None and t is not asyncio.current_task() and not t.done():
            t.cancel()
        w = self._writer
        self._writer = None
        self._reader = None
        if w is not None:
            try:
                w.close()
                await asyncio.wait_for(w.wait_closed(), 1)
            except Exception:
                pass

    async def _call_on_connect(self, session_present):
        # Here, not in connect.py: a finished task is kept (in _cb_tasks) with
        # its coroutine, which would keep connect.py loaded.
        try:
            r = self.on_connect(session_present)
            if _maybe_await(r):
                await r
        except Exception as e:
            self.counters["cb_errors"] += 1
            platform.print_exception(e)
