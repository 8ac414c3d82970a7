"""The device CBOR codec agrees with RFC 8949 and with host cbor2, and rejects bad input.

Every check runs inside the firmware process on both runtimes. Values cross
the process boundary as a JSON description (``DESCRIBE_SRC``) that is exact:
floats travel as IEEE-754 bits, text and bytes as hex, ints as decimal text.
"""

import json
import random
import struct
import sys

import cbor2
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from capshard.paths import FIRMWARE_DIR

# Runs on the host AND in the firmware process, so both describe values alike.
DESCRIBE_SRC = r'''
import json, struct
from capdev import cbor
from capdev.platform import hexlify, unhexlify

def describe(v):
    if v is None or v is True or v is False:
        return v
    if isinstance(v, int):
        return ["i", str(v)]
    if isinstance(v, float):
        if v != v:
            return ["f", "nan"]
        return ["f", hexlify(struct.pack(">d", v))]
    if isinstance(v, str):
        return ["s", hexlify(v.encode("utf-8"))]
    if isinstance(v, (bytes, bytearray)):
        return ["b", hexlify(bytes(v))]
    if isinstance(v, (list, tuple)):
        return ["a", [describe(x) for x in v]]
    if isinstance(v, dict):
        items = [[describe(k), describe(x)] for k, x in v.items()]
        items.sort(key=lambda kv: json.dumps(kv[0]))
        return ["m", items]
    if isinstance(v, cbor.Tag):
        return ["t", v.number, describe(v.value)]
    return ["?", repr(v)]

def build(d):
    if d is None or d is True or d is False:
        return d
    k = d[0]
    if k == "i":
        return int(d[1])
    if k == "f":
        return float("nan") if d[1] == "nan" else struct.unpack(">d", unhexlify(d[1]))[0]
    if k == "s":
        return str(unhexlify(d[1]), "utf-8")
    if k == "b":
        return unhexlify(d[1])
    if k == "a":
        return [build(x) for x in d[1]]
    if k == "m":
        return dict([(build(a), build(b)) for a, b in d[1]])
    if k == "t":
        return cbor.Tag(d[1], build(d[2]))
    raise ValueError(k)

def outcome(fn):
    # ["ok", described value] or ["err", type, reason, message, is-a-ValueError]
    try:
        return ["ok", describe(fn())]
    except Exception as e:
        return ["err", type(e).__name__, getattr(e, "reason", None), str(e), isinstance(e, ValueError)]
'''

_HOST = {}


def describe(v):
    """Host-side twin of the firmware's describe()."""
    if not _HOST:
        if FIRMWARE_DIR not in sys.path:
            sys.path.insert(0, FIRMWARE_DIR)
        exec(DESCRIBE_SRC, _HOST)
    if isinstance(v, cbor2.CBORTag):
        return ["t", v.tag, describe(v.value)]
    return _HOST["describe"](v)


def batch(fw, body, cases, heap_kb=1024):
    """Run ``body`` for each case in ONE firmware process; return the results in order.

    Cases arrive as JSON lines on stdin (bound to ``case``); ``body`` sets ``result``.
    """
    code = (
        DESCRIBE_SRC
        + "import sys\n"
        + "while True:\n"
        + "    line = sys.stdin.readline()\n"
        + "    if not line.strip():\n"
        + "        break\n"
        + "    case = json.loads(line)\n"
        + "".join("    " + ln + "\n" for ln in body.strip().splitlines())
        + "    print(json.dumps(result))\n"
    )
    stdin = "".join(json.dumps(c) + "\n" for c in cases)
    lines = [ln for ln in fw.run(code, input=stdin, heap_kb=heap_kb).splitlines() if ln.strip()]
    assert len(lines) == len(cases), f"{len(lines)} results for {len(cases)} cases"
    return [json.loads(ln) for ln in lines]


# ---- RFC 8949 Appendix A ------------------------------------------------------

INF, NAN = float("inf"), float("nan")

# (hex, value, canonical): canonical rows must also come out of dumps() unchanged.
APPENDIX_A = [
    ("00", 0, True), ("01", 1, True), ("0a", 10, True), ("17", 23, True),
    ("1818", 24, True), ("1819", 25, True), ("1864", 100, True), ("1903e8", 1000, True),
    ("1a000f4240", 1000000, True), ("1b000000e8d4a51000", 1000000000000, True),
    ("1bffffffffffffffff", 18446744073709551615, True),
    ("3bffffffffffffffff", -18446744073709551616, True),
    ("20", -1, True), ("29", -10, True), ("3863", -100, True), ("3903e7", -1000, True),
    ("f90000", 0.0, True), ("f98000", -0.0, True), ("f93c00", 1.0, True),
    ("fb3ff199999999999a", 1.1, True), ("f93e00", 1.5, True), ("f97bff", 65504.0, True),
    ("fa47c35000", 100000.0, True), ("fa7f7fffff", 3.4028234663852886e+38, True),
    ("fb7e37e43c8800759c", 1.0e+300, True), ("f90001", 5.960464477539063e-8, True),
    ("f90400", 0.00006103515625, True), ("f9c400", -4.0, True),
    ("fbc010666666666666", -4.1, True),
    ("f97c00", INF, True), ("f97e00", NAN, True), ("f9fc00", -INF, True),
    ("fa7f800000", INF, False), ("fa7fc00000", NAN, False), ("faff800000", -INF, False),
    ("fb7ff0000000000000", INF, False), ("fb7ff8000000000000", NAN, False),
    ("fbfff0000000000000", -INF, False),
    ("f4", False, True), ("f5", True, True), ("f6", None, True),
    ("40", b"", True), ("4401020304", b"\x01\x02\x03\x04", True),
    ("60", "", True), ("6161", "a", True), ("6449455446", "IETF", True),
    ("62225c", "\"\\", True), ("62c3bc", "\u00fc", True), ("63e6b0b4", "\u6c34", True),
    ("64f0908591", "\U00010151", True),  # "\ud800\udd51" in the RFC's JSON notation
    ("80", [], True), ("83010203", [1, 2, 3], True),
    ("8301820203820405", [1, [2, 3], [4, 5]], True),
    ("98190102030405060708090a0b0c0d0e0f101112131415161718181819", list(range(1, 26)), True),
    ("a0", {}, True), ("a201020304", {1: 2, 3: 4}, True),
    ("a26161016162820203", {"a": 1, "b": [2, 3]}, True),
    ("826161a161626163", ["a", {"b": "c"}], True),
    ("a56161614161626142616361436164614461656145",
     {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"}, True),
]


def test_rfc8949_appendix_a_decodes(fw):
    results = batch(fw, "result = outcome(lambda: cbor.loads(unhexlify(case)))",
                    [h for h, _, _ in APPENDIX_A])
    for (h, value, _), got in zip(APPENDIX_A, results):
        assert got == ["ok", describe(value)], h


def test_rfc8949_appendix_a_encodes_canonically(fw):
    rows = [(h, v) for h, v, canonical in APPENDIX_A if canonical]
    results = batch(fw, "result = hexlify(cbor.dumps(build(case)))", [describe(v) for _, v in rows])
    assert results == [h for h, _ in rows]


def test_map_keys_sorted_bytewise_rfc8949_4_2_1(fw):
    # The section 4.2.1 example order (scalar keys of our subset): 10, 100, -1, "z", "aa".
    # cbor2 canonical=True sorts length-first (RFC 7049) and would put -1 before 100.
    value = {"aa": 5, "z": 4, -1: 3, 100: 2, 10: 1}
    got = batch(fw, "result = hexlify(cbor.dumps(build(case)))", [describe(value)])[0]
    assert got == "a5" "0a01" "186402" "2003" "617a04" "62616105"


def test_tuples_and_bytearrays_encode_like_lists_and_bytes(fw):
    code = DESCRIBE_SRC + (
        "print(json.dumps([hexlify(cbor.dumps((1, (2, 'x')))), hexlify(cbor.dumps(bytearray(b'ab'))),"
        " hexlify(cbor.dumps({'k': (True, None)}))]))\n"
    )
    assert fw.run_json(code) == [
        cbor2.dumps([1, [2, "x"]]).hex(), "426162", cbor2.dumps({"k": [True, None]}).hex()]


def test_allowed_tags_come_back_as_tag_objects(fw):
    code = DESCRIBE_SRC + (
        "t = cbor.loads(unhexlify('d18201a10102'), allow_tags=(17,))\n"
        "print(json.dumps([describe(t), t == cbor.Tag(17, [1, {1: 2}]), hexlify(cbor.dumps(t)),\n"
        "                  t != cbor.Tag(17, [1, {1: 2}]), t != cbor.Tag(18, [1, {1: 2}]), t != 17]))\n"
    )
    assert fw.run_json(code) == [["t", 17, describe([1, {1: 2}])], True, "d18201a10102",
                                 False, True, True]


# ---- agreement with host cbor2, generated by hypothesis -------------------------

# Maps use one key type each: for those, cbor2's length-first order (RFC 7049)
# and RFC 8949's bytewise order coincide, so the bytes must match exactly.
_ints = st.integers(min_value=-2**64, max_value=2**64 - 1)
_floats = st.one_of(st.floats(width=16), st.floats(width=32), st.floats())
_leaves = st.one_of(st.none(), st.booleans(), _ints, _floats,
                    st.text(max_size=24), st.binary(max_size=24))


def _maps(children):
    return st.one_of(*(st.dictionaries(keys, children, max_size=5) for keys in (
        st.integers(0, 2**64 - 1), st.integers(-2**64, -1), st.text(max_size=12), st.binary(max_size=12))))


VALUES = st.recursive(_leaves, lambda c: st.one_of(st.lists(c, max_size=6), _maps(c)), max_leaves=24)


def _examples(strategy, n):
    """``n`` values drawn deterministically (fixed seed, no example database)."""
    out = []

    @settings(max_examples=n, derandomize=True, database=None, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(v):
        out.append(v)

    collect()
    return out


def _cbor2_half_quirk(v):
    """True when ``v`` holds a float that half precision keeps exactly but
    cbor2 (5.x, canonical=True) writes as single: |x| in [32768, 65504].
    RFC 8949 section 4.2.1 wants the shortest form, so there our bytes are
    right and shorter, and only the value can be compared."""
    if isinstance(v, float):
        return 32768 <= abs(v) <= 65504 and struct.unpack(">e", struct.pack(">e", v))[0] == v
    if isinstance(v, (list, tuple)):
        return any(_cbor2_half_quirk(x) for x in v)
    if isinstance(v, dict):
        return any(_cbor2_half_quirk(x) for x in v.values())
    return False


def _assert_same_as_cbor2(ours, v):
    theirs = cbor2.dumps(v, canonical=True)
    if _cbor2_half_quirk(v):
        assert describe(cbor2.loads(ours)) == describe(v) and len(ours) < len(theirs), repr(v)
    else:
        assert ours == theirs, repr(v)


def test_cbor2_writes_exponent_15_halves_as_single_floats():
    # Pins the quirk the two tests below allow for: if cbor2 starts writing
    # the half, _cbor2_half_quirk can go.
    assert cbor2.dumps(32768.0, canonical=True).hex() == "fa47000000"
    assert cbor2.dumps(16384.0, canonical=True).hex() == "f97400"


def test_host_cbor2_to_firmware_and_back_is_byte_identical(fw):
    values = _examples(VALUES, 200)
    encoded = [cbor2.dumps(v, canonical=True) for v in values]
    results = batch(fw, (
        "v = cbor.loads(unhexlify(case), max_depth=64, max_size=1 << 20)\n"
        "result = [describe(v), hexlify(cbor.dumps(v, max_depth=64))]\n"
    ), [e.hex() for e in encoded])
    for v, e, (desc, again) in zip(values, encoded, results):
        assert desc == describe(v), e.hex()
        _assert_same_as_cbor2(bytes.fromhex(again), v)


def test_firmware_to_host_cbor2_is_byte_identical(fw):
    values = _examples(VALUES, 200)
    results = batch(fw, "result = hexlify(cbor.dumps(build(case), max_depth=64))",
                    [describe(v) for v in values])
    for v, got in zip(values, results):
        data = bytes.fromhex(got)
        _assert_same_as_cbor2(data, v)
        assert describe(cbor2.loads(data)) == describe(v)


# ---- strict decoding ------------------------------------------------------------

DEEP = 2**40  # max_size large enough that only the input length can stop a claim

# (hex input, loads() keyword arguments, reason)
REJECTED = [
    ("", {}, "truncated"),
    ("18", {}, "truncated"),
    ("1901", {}, "truncated"),
    ("1b00000000000000", {}, "truncated"),
    ("8201", {}, "length beyond input"),
    ("82190100", {}, "truncated"),
    ("a10102a1", {}, "trailing bytes"),
    ("a101", {}, "length beyond input"),
    ("a1190100", {}, "truncated"),
    ("fa0000", {}, "truncated"),
    ("fb00000000000000", {}, "truncated"),
    ("f9", {}, "truncated"),
    ("0000", {}, "trailing bytes"),
    ("f6f6", {}, "trailing bytes"),
    ("c11a514b67b0", {}, "tag not allowed"),
    ("c249010000000000000000", {}, "tag not allowed"),
    ("d18440a04040", {}, "tag not allowed"),
    ("d28440a04040", {"allow_tags": (17,)}, "tag not allowed"),
    ("81" * 17 + "00", {}, "nesting too deep"),
    ("a1" + "6161a1" * 16 + "616100", {}, "nesting too deep"),
    ("818100", {"max_depth": 1}, "nesting too deep"),
    ("d1" * 17 + "00", {"allow_tags": (17,)}, "nesting too deep"),
    ("450102", {}, "length beyond input"),
    ("6461", {}, "length beyond input"),
    ("9a00001000" + "00" * 10, {}, "length beyond input"),
    ("5b0000000100000000" + "00" * 8, {"max_size": DEEP}, "length beyond input"),
    ("9b0000000100000000" + "00" * 8, {"max_size": DEEP}, "length beyond input"),
    ("bb0000000100000000" + "00" * 8, {"max_size": DEEP}, "length beyond input"),
    ("ba00000002" + "0000", {}, "length beyond input"),
    ("5a00010000" + "00" * 8, {}, "exceeds max_size"),
    ("bb0000000100000000", {}, "exceeds max_size"),
    ("4b" + "00" * 11, {"max_size": 10}, "exceeds max_size"),
    ("61ff", {}, "invalid utf-8"),
    ("6180", {}, "invalid utf-8"),
    ("62c328", {}, "invalid utf-8"),
    ("62c080", {}, "invalid utf-8"),          # overlong NUL
    ("63e08080", {}, "invalid utf-8"),        # overlong 3-byte
    ("63eda080", {}, "invalid utf-8"),        # UTF-16 surrogate U+D800
    ("64f4908080", {}, "invalid utf-8"),      # above U+10FFFF
    ("64f8888080", {}, "invalid utf-8"),
    ("62e6b0", {}, "invalid utf-8"),          # sequence cut by the string's end
    ("a2010001f6", {}, "duplicate map key"),
    ("a2616100616101", {}, "duplicate map key"),
    ("a24200010042000101", {}, "duplicate map key"),
    ("5f4100ff", {}, "indefinite length"),
    ("7f6161ff", {}, "indefinite length"),
    ("9fff", {}, "indefinite length"),
    ("bfff", {}, "indefinite length"),
    ("ff", {}, "indefinite length"),
    ("8301ff02", {}, "indefinite length"),
    ("f7", {}, "simple value not allowed"),   # undefined
    ("e0", {}, "simple value not allowed"),
    ("f0", {}, "simple value not allowed"),
    ("f820", {}, "simple value not allowed"),
    ("f8ff", {}, "simple value not allowed"),
    ("1c", {}, "reserved additional info"),
    ("3d", {}, "reserved additional info"),
    ("5e", {}, "reserved additional info"),
    ("dc00", {}, "reserved additional info"),
    ("fc", {}, "reserved additional info"),
    ("fe", {}, "reserved additional info"),
    ("1f", {}, "reserved additional info"),
    ("3f", {}, "reserved additional info"),
    ("df00", {}, "reserved additional info"),
    ("a18000", {}, "map key type not allowed"),
    ("a1a000", {}, "map key type not allowed"),
    ("a1f400", {}, "map key type not allowed"),
    ("a1f600", {}, "map key type not allowed"),
    ("a1f93c0000", {}, "map key type not allowed"),
    ("a1d10000", {"allow_tags": (17,)}, "map key type not allowed"),
]


def test_strict_decoding_rejects_each_case_with_its_reason(fw):
    cases = [[h, {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}]
             for h, kw, _ in REJECTED]
    body = (
        "kw = case[1]\n"
        "if 'allow_tags' in kw:\n"
        "    kw['allow_tags'] = tuple(kw['allow_tags'])\n"
        "result = outcome(lambda: cbor.loads(unhexlify(case[0]), **kw))\n"
    )
    for (h, kw, reason), got in zip(REJECTED, batch(fw, body, cases)):
        assert got[:3] == ["err", "CBORError", reason], (h, kw, got)
        assert got[3].startswith(reason) and got[4] is True, got  # message names it; a ValueError


def test_limits_are_inclusive(fw):
    # Exactly at the limits must still decode.
    cases = [
        ["81" * 16 + "00", {}],
        ["4a" + "00" * 10, {"max_size": 11}],
        ["9a00001000" + "00" * 4096, {"max_size": 4101}],
        ["a1" + "6161a1" * 15 + "616100", {}],
    ]
    results = batch(fw, "result = outcome(lambda: cbor.loads(unhexlify(case[0]), **case[1]))", cases)
    assert [r[0] for r in results] == ["ok"] * len(cases), results


# (value, reason) for dumps()
UNENCODABLE = [
    ("2**64", "int out of range"),
    ("-2**64 - 1", "int out of range"),
    ("{1, 2}", "type not supported"),
    ("object()", "type not supported"),
    ("{(1, 2): 1}", "map key type not allowed"),
    ("{1.5: 1}", "map key type not allowed"),
    ("{True: 1}", "map key type not allowed"),
    ("{None: 1}", "map key type not allowed"),
    ("[[[[1]]]]", "nesting too deep"),  # with max_depth=3
]


def test_dumps_rejects_values_outside_the_subset(fw):
    code = DESCRIBE_SRC + "out = []\n" + "".join(
        f"out.append(outcome(lambda: cbor.dumps({expr}, max_depth=3)))\n" for expr, _ in UNENCODABLE
    ) + "print(json.dumps(out))\n"
    for (expr, reason), got in zip(UNENCODABLE, fw.run_json(code)):
        assert got[:3] == ["err", "CBORError", reason], (expr, got)


def _mutations(seed, n):
    """Valid encodings with one byte flipped, cut short or extended."""
    rng = random.Random(seed)
    bases = [cbor2.dumps(v, canonical=True) for v in _examples(VALUES, 40)]
    out = []
    while len(out) < n:
        b = bytearray(rng.choice(bases))
        op = rng.randrange(3)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:
            del b[rng.randrange(len(b)):]
        else:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        out.append(bytes(b))
    return out


def test_garbage_raises_only_cbor_error(fw):
    """Whatever the bytes, loads() returns a value or raises CBORError: never anything else."""
    rng = random.Random(2)
    inputs = _mutations(1, 300) + [rng.randbytes(n) for n in range(1, 60)]
    results = batch(fw, "result = outcome(lambda: cbor.loads(unhexlify(case)))",
                    [i.hex() for i in inputs])
    for data, got in zip(inputs, results):
        assert got[0] == "ok" or got[1] == "CBORError", (data.hex(), got)
    assert sum(r[0] == "err" for r in results) > 50  # the mutations did hit the checks


# ---- memory on a small heap --------------------------------------------------------

def _kib_message():
    # About 1 KiB: a QoS-report-like map with text keys, ints, floats and bytes.
    msg = {"v": 1, "dev": "dev-0042", "seq": 123456, "t": 1767225600,
           "classes": {c: {"bw_kbps": 1000 + i, "lat_ms": None if i % 3 else 20 + i,
                           "flows": i, "conf": 90}
                       for i, c in enumerate(["telephony", "signaling", "oam", "standard",
                                              "low-latency-data", "high-throughput-data",
                                              "multimedia-streaming", "broadcast-video",
                                              "real-time-interactive", "secure-tunnel"])},
           "security": {"level": "integrity", "dests": ["10.0.0.%d" % i for i in range(12)]},
           "blob": bytes(range(256)), "ratio": 0.1}
    data = cbor2.dumps(msg, canonical=True)
    assert 900 <= len(data) <= 1300, len(data)
    return msg, data


def test_small_heap_decodes_1kib_and_refuses_huge_claims_cleanly(fw):
    msg, data = _kib_message()
    huge = ["bb0000000100000000", "9b0000000100000000", "5b0000000100000000", "7b0000000100000000"]
    code = DESCRIBE_SRC + (
        "import gc, sys\n"
        f"data = unhexlify('{data.hex()}')\n"
        "gc.collect()\n"
        "gc.disable()  # so the difference is everything loads() allocated\n"
        "before = gc.mem_alloc() if hasattr(gc, 'mem_alloc') else None\n"
        "v = cbor.loads(data)\n"
        "after = gc.mem_alloc() if hasattr(gc, 'mem_alloc') else None\n"
        "gc.enable()\n"
        "same = cbor.dumps(v) == data\n"
        "out = [same, None if before is None else after - before]\n"
        f"for h in {huge!r}:\n"
        "    out.append(outcome(lambda: cbor.loads(unhexlify(h) + bytes(16))))\n"
        "    out.append(outcome(lambda: cbor.loads(unhexlify(h) + bytes(16), max_size=1 << 40)))\n"
        "print(json.dumps(out))\n"
        "del data, out\n"
        "json.dump(describe(v), sys.stdout)  # streamed: the test harness must not need a big buffer\n"
        "print()\n"
    )
    lines = fw.run(code, heap_kb=64).splitlines()
    (same, grown, *claims), desc = json.loads(lines[0]), json.loads(lines[1])
    assert desc == describe(msg) and same is True
    if fw.runtime == "micropython":
        assert grown < 16 * 1024, grown  # the decoded tree, not copies of the input
    assert [c[:3] for c in claims] == [
        ["err", "CBORError", "exceeds max_size"], ["err", "CBORError", "length beyond input"]] * 4
