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


# Reasons for MqttProtocolError: line n of _REASONS for error number n, with
# "%s"/"%d" filled in by _error(). One string constant: as ~30 separate
# messages they were a heap object each on a board (~1 KiB).
_E_LENGTH_RANGE = const(0)
_E_LENGTH_LONG = const(1)
_E_NOT_UTF8 = const(2)
_E_NOT_STR = const(3)
_E_NUL = const(4)
_E_TOO_LONG = const(5)
_E_PAYLOAD_TYPE = const(6)
_E_QOS = const(7)
_E_PID_RANGE = const(8)
_E_TOPIC_EMPTY = const(9)
_E_TOPIC_WILDCARD = const(10)
_E_QOS0_PID = const(11)
_E_QOS0_DUP = const(12)
_E_PID_ZERO = const(13)
_E_UNEXPECTED_TYPE = const(14)
_E_RESERVED_FLAGS = const(15)
_E_PINGRESP_LENGTH = const(16)
_E_CONNACK_LENGTH = const(17)
_E_CONNACK_FLAGS = const(18)
_E_CONNACK_SESSION = const(19)
_E_SUBACK_SHORT = const(20)
_E_SUBACK_CODE = const(21)
_E_ACK_LENGTH = const(22)
_E_PUBLISH_QOS3 = const(23)
_E_PUBLISH_QOS2 = const(24)
_E_PUBLISH_DUP = const(25)
_E_PUBLISH_SHORT = const(26)
_E_PUBLISH_TOPIC = const(27)
_E_PACKET_SIZE = const(28)
_REASONS = (
    "remaining length %d out of range\n"
    "remaining length longer than 4 bytes\n"
    "%s is not valid UTF-8\n"
    "%s must be str\n"
    "%s contains U+0000\n"
    "%s longer than 65535 bytes\n"
    "payload must be bytes or str\n"
    "%s QoS must be 0 or 1 (QoS 2 is not supported)\n"
    "packet id must be 1..65535\n"
    "topic is empty\n"
    "topic name contains a wildcard\n"
    "QoS 0 publish has no packet id\n"
    "DUP must be 0 for QoS 0\n"
    "packet id 0\n"
    "unexpected packet type %d from broker\n"
    "reserved flags set on packet type %d\n"
    "PINGRESP length must be 0\n"
    "CONNACK length must be 2\n"
    "CONNACK reserved flags set\n"
    "refused CONNACK claims a session\n"
    "SUBACK too short\n"
    "SUBACK return code 0x%02x invalid\n"
    "packet type %d length must be 2\n"
    "PUBLISH QoS 3\n"
    "PUBLISH QoS 2 is not supported\n"
    "DUP set on QoS 0 PUBLISH\n"
    "PUBLISH too short\n"
    "PUBLISH topic runs past the packet\n"
    "packet of %d bytes exceeds the %d-byte limit"
)


# One copy of this small helper per module that keeps a text table, on
# purpose: a shared module for it cost 2 KiB of steady heap (performance.md).
def _error(n, args=None):
    """The MqttProtocolError for reason ``n`` (an _E_ number)."""
    text = _REASONS.split("\n")[n]
    return MqttProtocolError(text if args is None else text % args)


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
        raise _error(_E_LENGTH_RANGE, n)
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
            raise _error(_E_LENGTH_LONG)
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
            raise _error(_E_NOT_UTF8, what)
    else:
        raise _error(_E_NOT_STR, what)
    if "\x00" in s:
        raise _error(_E_NUL, what)
    if len(b) > 65535:
        raise _error(_E_TOO_LONG, what)
    return b


def _payload(payload):
    if isinstance(payload, str):
        return payload.encode()
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return payload
    if payload is None:
        return b""
    raise _error(_E_PAYLOAD_TYPE)


def _check_qos(qos, what):
    if qos != 0 and qos != 1:
        raise _error(_E_QOS, what)


def _check_pid(pid):
    if not isinstance(pid, int) or pid < 1 or pid > 65535:
        raise _error(_E_PID_RANGE)


def _check_topic_name(topic):
    # Topic names (not filters) carry no wildcards and are not empty (spec 4.7).
    b = _utf8(topic, "topic")
    if not b:
        raise _error(_E_TOPIC_EMPTY)
    if b"+" in b or b"#" in b:
        raise _error(_E_TOPIC_WILDCARD)
    return b


# ---- encoders (client -> broker) --------------------------------------------
def encode_publish(topic, payload, qos=0, retain=False, dup=False, pid=None):
    """PUBLISH (spec 3.3); ``pid`` is required for QoS 1 and forbidden for QoS 0."""
    _check_qos(qos, "publish")
    t = _check_topic_name(topic)
    p = _payload(payload)
    if qos == 0:
        if pid:
            raise _error(_E_QOS0_PID)
        if dup:
            raise _error(_E_QOS0_DUP)
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
        raise _error(_E_PID_ZERO)
    return pid


def decode_packet(first, body):
    """Decode one packet from its first byte and its body (a bytes-like)."""
    ptype = first >> 4
    flags = first & 0x0F
    n = len(body)
    if ptype == PUBLISH:
        return _decode_publish(flags, body)
    if ptype not in (CONNACK, PUBACK, SUBACK, UNSUBACK, PINGRESP):
        raise _error(_E_UNEXPECTED_TYPE, ptype)
    if flags:
        raise _error(_E_RESERVED_FLAGS, ptype)
    p = Packet(ptype)
    if ptype == PINGRESP:
        if n:
            raise _error(_E_PINGRESP_LENGTH)
    elif ptype == CONNACK:
        if n != 2:
            raise _error(_E_CONNACK_LENGTH)
        if body[0] & 0xFE:
            raise _error(_E_CONNACK_FLAGS)
        p.session_present = bool(body[0] & 1)
        p.code = body[1]
        if p.code and p.session_present:
            raise _error(_E_CONNACK_SESSION)
    elif ptype == SUBACK:
        if n < 3:
            raise _error(_E_SUBACK_SHORT)
        p.pid = _pid_at(body, 0)
        granted = []
        for i in range(2, n):
            code = body[i]
            if code not in (0, 1, 2, SUBACK_FAILURE):
                raise _error(_E_SUBACK_CODE, code)
            granted.append(code)
        p.granted = granted
    else:  # PUBACK, UNSUBACK
        if n != 2:
            raise _error(_E_ACK_LENGTH, ptype)
        p.pid = _pid_at(body, 0)
    return p


def _decode_publish(flags, body):
    qos = (flags >> 1) & 3
    if qos == 3:
        raise _error(_E_PUBLISH_QOS3)
    if qos == 2:
        raise _error(_E_PUBLISH_QOS2)
    dup = bool(flags & 0x08)
    if dup and not qos:
        raise _error(_E_PUBLISH_DUP)
    n = len(body)
    if n < 2:
        raise _error(_E_PUBLISH_SHORT)
    tlen = (body[0] << 8) | body[1]
    i = 2 + tlen
    if i + (2 if qos else 0) > n:
        raise _error(_E_PUBLISH_TOPIC)
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
            raise _error(_E_PACKET_SIZE, (total, self.max_packet_size))
        if end - pos < total:
            return None
        first = buf[pos]
        body = memoryview(buf)[pos + 1 + nlen:pos + total]
        if pos + total == end:
            # All taken: the next bytes go to a new buffer, and this one
            # (as large as the largest packet) goes once decoded, which
            # copies what it keeps.
            self._buf = bytearray()
            self._pos = 0
        else:
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
