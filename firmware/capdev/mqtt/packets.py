# MQTT 3.1.1 codec without I/O (the h11 shape): functions turn arguments into
# packet bytes, and Parser turns received bytes into Packet objects.
# Only the client side is covered: we encode what a client sends and decode
# what a broker sends to a client that uses QoS 0 and 1.
# Every bad input, in either direction, raises MqttProtocolError with a reason.
# CONNECT/SUBSCRIBE/UNSUBSCRIBE are in session.py, reached through this module.
from capdev.platform import const

# Packet types (spec 2.2.1). Those no other module reads are private: on
# MicroPython a const() whose name starts with "_" takes no RAM.
_CONNECT = const(1)
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
_SUBSCRIBE = const(8)
SUBACK = const(9)
_UNSUBSCRIBE = const(10)
UNSUBACK = const(11)
_PINGREQ_TYPE = const(12)
PINGRESP = const(13)
_DISCONNECT_TYPE = const(14)

DEFAULT_MAX_PACKET = const(16384)
_MAX_REMAINING = const(268435455)  # largest value four length bytes can carry

PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"

SUBACK_FAILURE = const(0x80)

class MqttProtocolError(ValueError):
    """A packet that breaks MQTT 3.1.1 (or our limits); the reason says how."""

    @property
    def reason(self):
        return self.args[0] if self.args else ""


class Packet:
    """One decoded packet from the broker; only the fields of its type are set."""

    def __init__(self, ptype):
        self.type = ptype
        self.pid = 0
        self.topic = None
        self.payload = None
        self.qos = 0
        self.retain = False
        self.dup = False
        self.code = 0  # CONNACK return code
        self.session_present = False
        self.granted = None  # SUBACK return codes


# ---- remaining length (spec 2.2.3) ------------------------------------------
def encode_length(n):
    if n < 0 or n > _MAX_REMAINING:
        raise MqttProtocolError("remaining length %d out of range" % n)
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_length(buf, offset=0, end=None):
    """(value, bytes used) of the varint at ``offset``, or None if it is incomplete."""
    if end is None:
        end = len(buf)
    value = 0
    shift = 0
    i = offset
    while i < end:
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return value, i - offset
        if i - offset >= 4:
            raise MqttProtocolError("remaining length longer than 4 bytes")
        shift += 7
    return None


# ---- field helpers ----------------------------------------------------------
def _utf8(s, what):
    # Strings on the wire are UTF-8 with a 2-byte length and no U+0000 (spec 1.5.3).
    if isinstance(s, str):
        b = s.encode()
    elif isinstance(s, (bytes, bytearray)):
        b = bytes(s)
        try:
            s = b.decode()
        except UnicodeError:
            raise MqttProtocolError(what + " is not valid UTF-8")
    else:
        raise MqttProtocolError(what + " must be str")
    if "\x00" in s:
        raise MqttProtocolError(what + " contains U+0000")
    if len(b) > 65535:
        raise MqttProtocolError(what + " longer than 65535 bytes")
    return b


def _payload(payload):
    if isinstance(payload, str):
        return payload.encode()
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return payload
    if payload is None:
        return b""
    raise MqttProtocolError("payload must be bytes or str")


def _check_qos(qos, what):
    if qos not in (0, 1):
        raise MqttProtocolError(what + " QoS must be 0 or 1 (QoS 2 is not supported)")


def _check_pid(pid):
    if not isinstance(pid, int) or pid < 1 or pid > 65535:
        raise MqttProtocolError("packet id must be 1..65535")


def _check_topic_name(topic):
    # Topic names (not filters) carry no wildcards and are not empty (spec 4.7).
    b = _utf8(topic, "topic")
    if not b:
        raise MqttProtocolError("topic is empty")
    if b"+" in b or b"#" in b:
        raise MqttProtocolError("topic name contains a wildcard")
    return b


# ---- encoders (client -> broker) --------------------------------------------
def encode_publish(topic, payload, qos=0, retain=False, dup=False, pid=None):
    """PUBLISH (spec 3.3); ``pid`` is required for QoS 1 and forbidden for QoS 0."""
    _check_qos(qos, "publish")
    t = _check_topic_name(topic)
    p = _payload(payload)
    if qos == 0:
        if pid:
            raise MqttProtocolError("QoS 0 publish has no packet id")
        if dup:
            raise MqttProtocolError("DUP must be 0 for QoS 0")
    else:
        _check_pid(pid)
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    rem = 2 + len(t) + (2 if qos else 0) + len(p)
    head = encode_length(rem)
    out = bytearray(1 + len(head) + rem)
    out[0] = first
    i = 1 + len(head)
    out[1:i] = head
    out[i] = len(t) >> 8
    out[i + 1] = len(t) & 0xFF
    i += 2
    out[i:i + len(t)] = t
    i += len(t)
    if qos:
        out[i] = pid >> 8
        out[i + 1] = pid & 0xFF
        i += 2
    out[i:] = p
    return out  # a bytearray: the client flips the DUP bit in place on resend


def encode_puback(pid):
    _check_pid(pid)
    return bytes((0x40, 0x02, pid >> 8, pid & 0xFF))


# ---- decoders (broker -> client) --------------------------------------------
def _pid_at(body, i):
    pid = (body[i] << 8) | body[i + 1]
    if pid == 0:
        raise MqttProtocolError("packet id 0")
    return pid


def decode_packet(first, body):
    """Decode one packet from its first byte and its body (a bytes-like)."""
    ptype = first >> 4
    flags = first & 0x0F
    n = len(body)
    if ptype == PUBLISH:
        return _decode_publish(flags, body)
    if ptype not in (CONNACK, PUBACK, SUBACK, UNSUBACK, PINGRESP):
        raise MqttProtocolError("unexpected packet type %d from broker" % ptype)
    if flags:
        raise MqttProtocolError("reserved flags set on packet type %d" % ptype)
    p = Packet(ptype)
    if ptype == PINGRESP:
        if n:
            raise MqttProtocolError("PINGRESP length must be 0")
    elif ptype == CONNACK:
        if n != 2:
            raise MqttProtocolError("CONNACK length must be 2")
        if body[0] & 0xFE:
            raise MqttProtocolError("CONNACK reserved flags set")
        p.session_present = bool(body[0] & 1)
        p.code = body[1]
        if p.code and p.session_present:
            raise MqttProtocolError("refused CONNACK claims a session")
    elif ptype == SUBACK:
        if n < 3:
            raise MqttProtocolError("SUBACK too short")
        p.pid = _pid_at(body, 0)
        granted = []
        for i in range(2, n):
            code = body[i]
            if code not in (0, 1, 2, SUBACK_FAILURE):
                raise MqttProtocolError("SUBACK return code 0x%02x invalid" % code)
            granted.append(code)
        p.granted = granted
    else:  # PUBACK, UNSUBACK
        if n != 2:
            raise MqttProtocolError("packet type %d length must be 2" % ptype)
        p.pid = _pid_at(body, 0)
    return p


def _decode_publish(flags, body):
    qos = (flags >> 1) & 3
    if qos == 3:
        raise MqttProtocolError("PUBLISH QoS 3")
    if qos == 2:
        raise MqttProtocolError("PUBLISH QoS 2 is not supported")
    dup = bool(flags & 0x08)
    if dup and not qos:
        raise MqttProtocolError("DUP set on QoS 0 PUBLISH")
    n = len(body)
    if n < 2:
        raise MqttProtocolError("PUBLISH too short")
    tlen = (body[0] << 8) | body[1]
    i = 2 + tlen
    if i + (2 if qos else 0) > n:
        raise MqttProtocolError("PUBLISH topic runs past the packet")
    p = Packet(PUBLISH)
    p.topic = _check_topic_name(bytes(body[2:i])).decode()
    if qos:
        p.pid = _pid_at(body, i)
        i += 2
    p.qos = qos
    p.dup = dup
    p.retain = bool(flags & 1)
    p.payload = bytes(body[i:])
    return p


class Parser:
    """Feed received bytes with ``feed()``; take whole packets with ``next_packet()``.

    A packet larger than ``max_packet_size`` (all bytes, header included) is
    refused as soon as its length is known, before its body is buffered.
    After an error the parser stays failed: the connection must be dropped.
    """

    def __init__(self, max_packet_size=DEFAULT_MAX_PACKET):
        self.max_packet_size = max_packet_size
        self._buf = bytearray()
        self._pos = 0  # start of the first unconsumed byte
        self._error = None

    def feed(self, data):
        if self._error is not None:
            raise self._error
        if self._pos:
            # Compact once per feed rather than once per packet.
            self._buf[0:self._pos] = b""
            self._pos = 0
        self._buf.extend(data)

    def buffered(self):
        return len(self._buf) - self._pos

    def next_packet(self):
        """The next complete packet, or None until more bytes arrive."""
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except MqttProtocolError as e:
            self._error = e
            raise

    def _next(self):
        buf = self._buf
        pos = self._pos
        end = len(buf)
        if end - pos < 2:
            return None
        got = decode_length(buf, pos + 1, end)
        if got is None:
            return None
        rem, nlen = got
        total = 1 + nlen + rem
        if total > self.max_packet_size:
            raise MqttProtocolError(
                "packet of %d bytes exceeds the %d-byte limit" % (total, self.max_packet_size))
        if end - pos < total:
            return None
        first = buf[pos]
        body = memoryview(buf)[pos + 1 + nlen:pos + total]
        self._pos = pos + total
        return decode_packet(first, body)


def __getattr__(name):
    # encode_connect, encode_subscribe, encode_unsubscribe, CONNACK_REASONS:
    # the connection set-up half, in session.py, loaded on first use.
    import sys

    import capdev.mqtt.session  # by full name: capdev.mqtt's own __getattr__ must not see "session"

    return getattr(sys.modules["capdev.mqtt.session"], name)


# Loaded with the codec so a caller measuring the heap sees it from the start;
# the device agent unloads it again between connections (agent.Agent.trim).
__import__("capdev.mqtt.session")
