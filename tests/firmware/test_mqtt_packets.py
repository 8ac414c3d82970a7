"""The MQTT 3.1.1 codec (capdev.mqtt.packets) and reconnect backoff, on both runtimes.

Expected bytes are worked out by hand from the MQTT 3.1.1 specification and,
for the encoder, also compared with what paho-mqtt puts on a real socket.
"""

import json
import os
import socket

import paho.mqtt.client as paho

PRELUDE = (
    "import json\n"
    "from capdev.mqtt import packets as P\n"
    "from capdev.platform import unhexlify as U, hexlify as H\n"
    "def err(f, *a):\n"
    "    try:\n"
    "        f(*a)\n"
    "    except P.MqttProtocolError as e:\n"
    "        return ['MqttProtocolError', isinstance(e, ValueError), e.reason]\n"
    "    except Exception as e:\n"
    "        return ['other', type(e).__name__, str(e)]\n"
    "    return None\n"
    "def pk(p):\n"
    "    if p is None:\n"
    "        return None\n"
    "    return {'type': p.type, 'pid': p.pid, 'topic': p.topic,\n"
    "            'payload': None if p.payload is None else H(p.payload), 'qos': p.qos,\n"
    "            'retain': p.retain, 'dup': p.dup, 'code': p.code,\n"
    "            'sp': p.session_present, 'granted': p.granted}\n"
    "def parse(hexdata, limit=P.DEFAULT_MAX_PACKET):\n"
    "    pr = P.Parser(limit)\n"
    "    pr.feed(U(hexdata))\n"
    "    out = []\n"
    "    while True:\n"
    "        p = pr.next_packet()\n"
    "        if p is None:\n"
    "            return out\n"
    "        out.append(pk(p))\n"
)

# Remaining-length examples: spec table 2.4 boundaries.
LENGTHS = [
    (0, "00"), (127, "7f"), (128, "8001"), (16383, "ff7f"), (16384, "808001"),
    (2097151, "ffff7f"), (2097152, "80808001"), (268435455, "ffffff7f"),
]

# (expression, expected hex), each worked out by hand from the spec.
ENCODE_CASES = [
    # CONNECT, clean session, keepalive 30, client id "dev1": 10-byte variable header + 6.
    ("P.encode_connect('dev1', clean_session=True, keepalive=30)",
     "1010" "00044d51545404" "02" "001e" "000464657631"),
    # CONNECT with every option: flags 0xEC = user|password|will retain|will QoS 1|will.
    ("P.encode_connect('c', 'u', b'pw', False, 60, ('w/t', b'bye', 1, True))",
     "101e" "00044d51545404" "ec" "003c" "000163" "0003772f74" "0003627965" "000175" "00027077"),
    # Will QoS 0, not retained, no credentials: flags 0x06 = will|clean.
    ("P.encode_connect('x', will=('d', 'off', 0, False), keepalive=0)",
     "1015" "00044d51545404" "06" "0000" "000178" "000164" "00036f6666"),
    # Non-ASCII client id: lengths count UTF-8 bytes, not characters.
    ("P.encode_connect('\u00e9', keepalive=5)", "100e" "00044d51545404" "02" "0005" "0002c3a9"),
    ("P.encode_subscribe(10, [('a/b', 0), ('c/#', 1)])",
     "820e" "000a" "0003612f6200" "0003632f2301"),
    ("P.encode_subscribe(65535, [('+', 1)])", "8206" "ffff" "00012b01"),
    ("P.encode_unsubscribe(0x1234, ['a/+'])", "a207" "1234" "0003612f2b"),
    ("P.encode_unsubscribe(1, ['a', 'b/#'])", "a20a" "0001" "000161" "0003622f23"),
    ("P.encode_publish('t', b'x')", "3004" "000174" "78"),
    ("P.encode_publish('t', 'x', 0, True)", "3104" "000174" "78"),
    # QoS 1, DUP, retain, packet id 5: first byte 0x30|0x08|0x02|0x01.
    ("P.encode_publish('a/b', b'hi', 1, True, True, 5)", "3b09" "0003612f62" "0005" "6869"),
    ("P.encode_publish('\u00fc/t', b'', 1, False, False, 258)", "3208" "0004c3bc2f74" "0102"),
    # 195-byte payload: remaining length 198 needs two bytes (0xc6 0x01).
    ("P.encode_publish('t', b'z' * 195)", "30c601" "000174" + "7a" * 195),
    ("P.encode_puback(7)", "40020007"),
    ("P.encode_puback(0xabcd)", "4002abcd"),
    ("P.PINGREQ", "c000"),
    ("P.DISCONNECT", "e000"),
]

ENCODE_ERRORS = [
    "P.encode_publish('t', b'x', 2, False, False, 1)",
    "P.encode_publish('t', b'x', 0, False, False, 3)",
    "P.encode_publish('t', b'x', 0, False, True)",
    "P.encode_publish('t', b'x', 1)",
    "P.encode_publish('t', b'x', 1, False, False, 0)",
    "P.encode_publish('t', b'x', 1, False, False, 65536)",
    "P.encode_publish('a/+', b'x')",
    "P.encode_publish('a/#', b'x')",
    "P.encode_publish('', b'x')",
    "P.encode_publish('a\\x00b', b'x')",
    "P.encode_publish(b'\\xff', b'x')",
    "P.encode_publish('t', 5)",
    "P.encode_publish('t' * 65536, b'')",
    "P.encode_subscribe(1, [])",
    "P.encode_subscribe(1, [('a/#/b', 0)])",
    "P.encode_subscribe(1, [('a+', 0)])",
    "P.encode_subscribe(1, [('a', 2)])",
    "P.encode_subscribe(1, ['a'])",
    "P.encode_subscribe(0, [('a', 0)])",
    "P.encode_unsubscribe(1, [])",
    "P.encode_unsubscribe(1, ['#/a'])",
    "P.encode_puback(0)",
    "P.encode_connect('c', None, b'pw')",
    "P.encode_connect('c', keepalive=70000)",
    "P.encode_connect('', clean_session=False)",
    "P.encode_connect('c', will=('t', b'x'))",
    "P.encode_connect('c', will=('t/#', b'x', 0, False))",
    "P.encode_connect('c', will=('t', b'x', 3, False))",
    "P.encode_length(268435456)",
    "P.encode_length(-1)",
]

DECODE_CASES = [
    ("20020000", {"type": 2, "code": 0, "sp": False}),
    ("20020100", {"type": 2, "code": 0, "sp": True}),
    ("20020005", {"type": 2, "code": 5, "sp": False}),
    ("9004000a0180", {"type": 9, "pid": 10, "granted": [1, 0x80]}),
    ("90030001" "02", {"type": 9, "pid": 1, "granted": [2]}),
    ("b0021234", {"type": 11, "pid": 0x1234}),
    ("40020007", {"type": 4, "pid": 7}),
    ("d000", {"type": 13}),
    ("3004000174" "78", {"type": 3, "topic": "t", "payload": "78", "qos": 0, "retain": False,
                         "dup": False, "pid": 0}),
    ("3b090003612f62" "0005" "6869", {"type": 3, "topic": "a/b", "payload": "6869", "qos": 1,
                                      "retain": True, "dup": True, "pid": 5}),
    ("3106" "0004c3bc2f74", {"type": 3, "topic": "\u00fc/t", "payload": "", "retain": True}),
]

MALFORMED = [
    ("20030000" "00", "CONNACK length"),
    ("20020200", "CONNACK reserved"),
    ("21020000", "reserved flags"),
    ("20020104", "refused CONNACK"),
    ("9002000a", "SUBACK too short"),
    ("9003000a03", "SUBACK return code"),
    ("40020000", "packet id 0"),
    ("4003000700", "length must be 2"),
    ("d00100", "PINGRESP"),
    ("3603000174", "QoS 3"),
    ("3405000174" "0001", "QoS 2"),
    ("3804000174" "78", "DUP"),
    ("3003000574", "runs past"),
    ("3204000174" "00", "runs past"),
    ("30040001ff78", "UTF-8"),
    ("3004000123" "78", "wildcard"),
    ("3002" "0000", "empty"),
    ("3203" "000174", "runs past"),
    ("3206" "000174" "0000" "78", "packet id 0"),
    ("0000", "packet type 0"),
    ("f000", "packet type 15"),
    ("50020001", "packet type 5"),
    ("1000", "packet type 1"),
    ("c000", "packet type 12"),
    ("e000", "packet type 14"),
    ("82050001000161", "packet type 8"),
    ("30ffffffff01", "longer than 4 bytes"),
]


def test_remaining_length_encode_decode(fw):
    code = PRELUDE + "out = []\n"
    for n, _ in LENGTHS:
        code += f"b = P.encode_length({n}); out.append([H(b), P.decode_length(b)])\n"
    # Incomplete varints are not errors: more bytes may come.
    code += "out.append([P.decode_length(U('ff')), P.decode_length(U('ffffff')), P.decode_length(b'')])\n"
    code += "out.append(P.decode_length(U('aa0580'), 1))\n"
    code += "out.append(err(P.decode_length, U('ffffffff01')))\n"
    code += "out.append(err(P.decode_length, U('80808080')))\n"
    code += "print(json.dumps(out))\n"
    out = fw.run_json(code)
    for (n, hx), got in zip(LENGTHS, out):
        assert got == [hx, [n, len(hx) // 2]]
    assert out[len(LENGTHS)] == [None, None, None]
    assert out[len(LENGTHS) + 1] == [5, 1]
    for e in out[len(LENGTHS) + 2:]:
        assert e[:2] == ["MqttProtocolError", True] and "4 bytes" in e[2]


def test_encoders_produce_spec_bytes(fw):
    code = PRELUDE + "out = []\n"
    for expr, _ in ENCODE_CASES:
        code += f"out.append(H({expr}))\n"
    code += "print(json.dumps(out))\n"
    out = fw.run_json(code)
    for (expr, hx), got in zip(ENCODE_CASES, out):
        assert got == hx, expr


def test_encoders_reject_bad_arguments_with_one_error_type(fw):
    code = PRELUDE + "out = []\n"
    for expr in ENCODE_ERRORS:
        code += f"out.append(err(lambda: {expr}))\n"
    code += "print(json.dumps(out))\n"
    out = fw.run_json(code, heap_kb=512)  # room for the 64 KiB topic
    for expr, got in zip(ENCODE_ERRORS, out):
        assert got is not None, f"{expr} was accepted"
        assert got[:2] == ["MqttProtocolError", True], (expr, got)
        assert got[2], f"{expr}: empty reason"


def test_decoder_reads_broker_packets(fw):
    code = PRELUDE + "out = []\n"
    for hx, _ in DECODE_CASES:
        code += f"out.append(parse('{hx}'))\n"
    code += "print(json.dumps(out))\n"
    out = fw.run_json(code)
    for (hx, want), got in zip(DECODE_CASES, out):
        assert len(got) == 1, hx
        for k, v in want.items():
            assert got[0][k] == v, (hx, k, got[0])


def test_malformed_input_raises_protocol_error_with_reason(fw):
    code = PRELUDE + "out = []\n"
    for hx, _ in MALFORMED:
        code += f"out.append(err(parse, '{hx}'))\n"
    # A failed parser stays failed: the connection has to go.
    code += (
        "pr = P.Parser()\n"
        "pr.feed(U('f000'))\n"
        "out.append([err(pr.next_packet), err(pr.next_packet), err(pr.feed, U('d000'))])\n"
    )
    code += "print(json.dumps(out))\n"
    out = fw.run_json(code)
    for (hx, reason), got in zip(MALFORMED, out):
        assert got is not None, f"{hx} was accepted"
        assert got[:2] == ["MqttProtocolError", True], (hx, got)
        assert reason in got[2], (hx, got[2])
    assert [e[0] for e in out[-1]] == ["MqttProtocolError"] * 3


def test_parser_fed_byte_by_byte_matches_whole_feed(fw):
    stream = "".join(hx for hx, _ in DECODE_CASES)
    code = PRELUDE + (
        f"data = U('{stream}')\n"
        "pr = P.Parser()\n"
        "one = []\n"
        "for i in range(len(data)):\n"
        "    pr.feed(data[i:i + 1])\n"
        "    while True:\n"
        "        p = pr.next_packet()\n"
        "        if p is None:\n"
        "            break\n"
        "        one.append([i, pk(p)])\n"
        "print(json.dumps([one, parse(H(data)), pr.buffered()]))\n"
    )
    one, whole, left = fw.run_json(code)
    assert [p for _, p in one] == whole
    assert len(whole) == len(DECODE_CASES)
    # Each packet comes out exactly when its last byte arrives.
    ends, pos = [], 0
    for hx, _ in DECODE_CASES:
        pos += len(hx) // 2
        ends.append(pos - 1)
    assert [i for i, _ in one] == ends
    assert left == 0


def test_size_limit_refuses_before_the_body_arrives(fw):
    code = PRELUDE + (
        "out = []\n"
        # Default limit 16 KiB: header announcing 16384 remaining bytes (16388 in all).
        "pr = P.Parser()\n"
        "pr.feed(U('30808001'))\n"
        "out.append(err(pr.next_packet))\n"
        # Limit counts the whole packet: 10 bytes pass, 11 do not.
        "ok = P.encode_publish('t', b'x' * 5)\n"
        "pr = P.Parser(len(ok)); pr.feed(ok); out.append(pk(pr.next_packet())['payload'])\n"
        "pr = P.Parser(len(ok) - 1); pr.feed(ok[:2]); out.append(err(pr.next_packet))\n"
        "pr = P.Parser(20000); pr.feed(P.encode_publish('t', b'y' * 19000)); out.append(len(pr.next_packet().payload))\n"
        "print(json.dumps(out))\n"
    )
    out = fw.run_json(code)
    assert out[0][0] == "MqttProtocolError" and "16388" in out[0][2] and "16384" in out[0][2]
    assert out[1] == "78" * 5
    assert out[2][0] == "MqttProtocolError" and "limit" in out[2][2]
    assert out[3] == 19000


def test_publish_round_trips_through_parser(fw):
    rnd = os.urandom(64)
    cases = []
    for i in range(24):
        topic = ["a", "dev/\u00e9t\u00e9/x", "s" * 300, "\u2603/q"][i % 4]
        payload = os.urandom((rnd[i] * 37) % 700)
        qos = i % 2
        cases.append([topic, payload.hex(), qos, bool(i % 3 == 0), bool(qos and i % 5 == 0),
                      (i * 2731) % 65535 + 1 if qos else None])
    code = PRELUDE + (
        f"cases = json.loads({json.dumps(json.dumps(cases))})\n"
        "pr = P.Parser()\n"
        "out = []\n"
        "for t, pl, q, r, d, pid in cases:\n"
        "    pr.feed(P.encode_publish(t, U(pl), q, r, d, pid))\n"
        "    p = pr.next_packet()\n"
        "    out.append([p.topic, H(p.payload), p.qos, p.retain, p.dup, p.pid or None])\n"
        "    pr.feed(P.encode_puback(pid or 1))\n"
        "    out[-1].append(pr.next_packet().pid)\n"
        "print(json.dumps(out))\n"
    )
    out = fw.run_json(code, heap_kb=512)  # the test data itself is large
    assert [o[:6] for o in out] == cases
    assert [o[6] for o in out] == [c[5] or 1 for c in cases]


# ---- agreement with paho-mqtt ------------------------------------------------
def _whole_packets(data):
    """True when ``data`` ends on an MQTT packet boundary."""
    i = 0
    while i < len(data):
        n, shift, j = 0, 0, i + 1
        while j < len(data):
            n |= (data[j] & 0x7F) << shift
            shift += 7
            j += 1
            if not data[j - 1] & 0x80:
                break
        else:
            return False
        i = j + n
    return i == len(data)


def _paho_wire(will, user, password, clean, keepalive, subs, unsubs, pubs):
    """Bytes paho-mqtt 2.x writes to a socket for a scripted session."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="dev-7", clean_session=clean,
                    protocol=paho.MQTTv311)
    if user is not None:
        c.username_pw_set(user, password)
    if will is not None:
        c.will_set(*will)
    c.connect("127.0.0.1", port, keepalive=keepalive)
    conn, _ = srv.accept()
    conn.settimeout(0.02)

    def drain():
        out = b""
        for _ in range(100):
            c.loop(0.01)
            try:
                out += conn.recv(65536)
            except socket.timeout:
                if out and _whole_packets(out):
                    break
        return out.hex()

    wire = {"connect": drain()}
    conn.sendall(b"\x20\x02\x00\x00")  # CONNACK accepted
    c.loop(0.05)
    _, mid = c.subscribe(subs)
    wire["subscribe"] = [mid, drain()]
    _, mid = c.unsubscribe(unsubs)
    wire["unsubscribe"] = [mid, drain()]
    wire["publish"] = []
    for topic, payload, qos, retain in pubs:
        info = c.publish(topic, payload, qos=qos, retain=retain)
        wire["publish"].append([info.mid if qos else None, drain()])
    c.disconnect()
    wire["disconnect"] = drain()
    conn.close()
    srv.close()
    return wire


def test_encoder_matches_paho_on_the_wire(fw):
    scenarios = [
        (("dev/7/state", b"offline", 1, True), "user-\u00e9", "s3cr\u00e9t", False, 45),
        (None, None, None, True, 30),
        (("w", b"", 0, False), "u", None, True, 0),
    ]
    subs = [("cmd/dev-7/#", 1), ("bcast/+/x", 0)]
    unsubs = ["bcast/+/x"]
    pubs = [("dev/7/qos", b"\x00\x01\xff" * 50, 1, False), ("dev/7/st", b"on", 0, True),
            ("dev/7/big", os.urandom(300), 1, True)]
    for will, user, password, clean, keepalive in scenarios:
        wire = _paho_wire(will, user, password, clean, keepalive, subs, unsubs, pubs)
        pw = None if password is None else password.encode()
        w = None if will is None else (will[0], will[1], will[2], will[3])
        code = PRELUDE + (
            f"w = json.loads({json.dumps(json.dumps(w and [w[0], w[1].hex(), w[2], w[3]]))})\n"
            "if w: w = (w[0], U(w[1]), w[2], w[3])\n"
            f"pw = {repr(pw.hex()) if pw else None}\n"
            f"user = json.loads({json.dumps(json.dumps(user))})\n"
            "out = {}\n"
            f"out['connect'] = H(P.encode_connect('dev-7', user, U(pw) if pw else None, {clean}, {keepalive}, w))\n"
            f"out['subscribe'] = H(P.encode_subscribe({wire['subscribe'][0]}, {subs!r}))\n"
            f"out['unsubscribe'] = H(P.encode_unsubscribe({wire['unsubscribe'][0]}, {unsubs!r}))\n"
            "out['publish'] = []\n"
        )
        for (topic, payload, qos, retain), (mid, _) in zip(pubs, wire["publish"]):
            code += (f"out['publish'].append(H(P.encode_publish({topic!r}, U('{payload.hex()}'), "
                     f"{qos}, {retain}, False, {mid})))\n")
        code += "out['disconnect'] = H(P.DISCONNECT)\nprint(json.dumps(out))\n"
        ours = fw.run_json(code)
        assert ours["connect"] == wire["connect"]
        assert ours["subscribe"] == wire["subscribe"][1]
        assert ours["unsubscribe"] == wire["unsubscribe"][1]
        assert ours["publish"] == [hx for _, hx in wire["publish"]]
        assert ours["disconnect"] == wire["disconnect"]


# ---- reconnect backoff ---------------------------------------------------------
def test_backoff_grows_to_cap_with_full_jitter_and_minimum_interval(fw):
    code = (
        "import json\n"
        "from capdev.mqtt.backoff import Backoff\n"
        "out = {}\n"
        # Deterministic 'random' at both ends of the range shows the ceilings.
        "hi = Backoff(100, 1000, 0, lambda n: n - 1)\n"
        "out['hi'] = [hi.next_delay_ms() for _ in range(7)]\n"
        "hi.reset(); out['after_reset'] = hi.next_delay_ms()\n"
        "lo = Backoff(100, 1000, 250, lambda n: 0)\n"
        "out['lo'] = [lo.next_delay_ms(0), lo.next_delay_ms(100), lo.next_delay_ms(300)]\n"
        # The platform's random source: every delay within [0, ceiling], and spread out.
        "b = Backoff(100, 2000, 0)\n"
        "for _ in range(5):\n"
        "    b.next_delay_ms()\n"
        "out['ceiling'] = b.ceiling_ms()\n"
        "out['spread'] = [b.next_delay_ms() for _ in range(300)]\n"
        "bad = []\n"
        "for args in ((0, 10, 0), (100, 50, 0), (100, 200, -1)):\n"
        "    try:\n"
        "        Backoff(*args)\n"
        "    except ValueError:\n"
        "        bad.append(True)\n"
        "out['bad'] = bad\n"
        "print(json.dumps(out))\n"
    )
    out = fw.run_json(code)
    assert out["hi"] == [100, 200, 400, 800, 1000, 1000, 1000]
    assert out["after_reset"] == 100
    assert out["lo"] == [250, 150, 0]
    assert out["ceiling"] == 2000
    spread = out["spread"]
    assert min(spread) >= 0 and max(spread) <= 2000
    # Full jitter: uniform over the range, not clustered at the cap.
    assert len(set(spread)) > 200
    assert 700 < sum(spread) / len(spread) < 1300
    assert out["bad"] == [True, True, True]
