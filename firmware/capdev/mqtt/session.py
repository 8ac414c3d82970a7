# The session half of the MQTT 3.1.1 codec: CONNECT, SUBSCRIBE, UNSUBSCRIBE
# and CONNACK reasons. Used when a connection is set up, so it lives apart
# from the per-message codec; packets.py re-exports these names (loaded on
# first use) and a device unloads this module between connections.
from capdev.mqtt.packets import MqttProtocolError, _check_pid, _check_qos, _check_topic_name, _payload, _utf8
from capdev.mqtt.packets import encode_length


# CONNACK return codes 1..5 (spec 3.2.2.3), for error messages.
CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


def _field(b, out):
    out.append(len(b) >> 8)
    out.append(len(b) & 0xFF)
    out.extend(b)


def _check_filter(topic):
    b = _utf8(topic, "topic filter")
    if not b:
        raise MqttProtocolError("topic filter is empty")
    levels = b.split(b"/")
    for i in range(len(levels)):
        lvl = levels[i]
        if b"#" in lvl and (lvl != b"#" or i != len(levels) - 1):
            raise MqttProtocolError("'#' must be a whole last level")
        if b"+" in lvl and lvl != b"+":
            raise MqttProtocolError("'+' must be a whole level")
    return b


def _frame(first, body):
    out = bytearray()
    out.append(first)
    out.extend(encode_length(len(body)))
    out.extend(body)
    return bytes(out)


def encode_connect(client_id, user=None, password=None, clean_session=True,
                   keepalive=30, will=None):
    """CONNECT (spec 3.1). ``will`` is (topic, payload, qos, retain) or None."""
    if not isinstance(keepalive, int) or keepalive < 0 or keepalive > 65535:
        raise MqttProtocolError("keepalive must be 0..65535 seconds")
    cid = _utf8(client_id, "client id")
    if not cid and not clean_session:
        raise MqttProtocolError("an empty client id needs clean_session")
    flags = 0x02 if clean_session else 0
    tail = bytearray()
    _field(cid, tail)
    if will is not None:
        try:
            w_topic, w_payload, w_qos, w_retain = will
        except (TypeError, ValueError):
            raise MqttProtocolError("will must be (topic, payload, qos, retain)")
        _check_qos(w_qos, "will")
        _field(_check_topic_name(w_topic), tail)
        w = _payload(w_payload)
        if len(w) > 65535:
            raise MqttProtocolError("will payload longer than 65535 bytes")
        _field(w, tail)
        flags |= 0x04 | (w_qos << 3) | (0x20 if w_retain else 0)
    if password is not None and user is None:
        raise MqttProtocolError("a password needs a user name")
    if user is not None:
        _field(_utf8(user, "user name"), tail)
        flags |= 0x80
    if password is not None:
        pw = _payload(password)
        if len(pw) > 65535:
            raise MqttProtocolError("password longer than 65535 bytes")
        _field(pw, tail)
        flags |= 0x40
    body = bytearray(b"\x00\x04MQTT\x04")
    body.append(flags)
    body.append(keepalive >> 8)
    body.append(keepalive & 0xFF)
    body.extend(tail)
    return _frame(0x10, body)


def encode_subscribe(pid, topics):
    """SUBSCRIBE (spec 3.8): ``topics`` is a list of (filter, qos)."""
    _check_pid(pid)
    if not topics:
        raise MqttProtocolError("SUBSCRIBE needs at least one topic")
    body = bytearray()
    body.append(pid >> 8)
    body.append(pid & 0xFF)
    for item in topics:
        try:
            topic, qos = item
        except (TypeError, ValueError):
            raise MqttProtocolError("subscription must be (topic, qos)")
        _check_qos(qos, "subscription")
        _field(_check_filter(topic), body)
        body.append(qos)
    return _frame(0x82, body)


def encode_unsubscribe(pid, topics):
    """UNSUBSCRIBE (spec 3.10): ``topics`` is a list of filters."""
    _check_pid(pid)
    if not topics:
        raise MqttProtocolError("UNSUBSCRIBE needs at least one topic")
    body = bytearray()
    body.append(pid >> 8)
    body.append(pid & 0xFF)
    for topic in topics:
        _field(_check_filter(topic), body)
    return _frame(0xA2, body)
