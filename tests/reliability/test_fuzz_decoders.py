"""Every decoder that meets outside input, fuzzed: it returns a value or raises
its one documented error type (targets.ALLOWED), never anything else.

Bounded for `make test` (FUZZ_EXAMPLES inputs per decoder, mutations of real
seeds plus random bytes); `make fuzz` runs the same targets for hours.
Inputs that once broke a decoder live in corpus/<decoder>/*.bin and are replayed.
"""

import json
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mutate
import targets
from capshard import fwrun, wire

FUZZ_EXAMPLES = int(os.environ.get("CAPSHARD_FUZZ_EXAMPLES", "300"))
GENERATORS = mutate.generators()
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow], database=None)


def _judge(name, data):
    try:
        return targets.run(name, data)
    except Exception as e:  # an undocumented error: keep the input, then fail
        path = targets.save_crasher(name, data)
        raise AssertionError(f"{name} raised {type(e).__name__}: {e} (input kept in {path})") from e


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_decoder_returns_or_raises_its_documented_error(name):
    seen = {"ok": 0, "rejected": 0}

    @FUZZ
    @given(st.integers(min_value=0, max_value=2 ** 48))
    def check(seed):
        data = GENERATORS[name](random.Random(seed))
        seen[_judge(name, data)] += 1

    check()
    # The mutators must reach the rejecting paths; a decoder that rejects
    # nothing is not being exercised.
    assert seen["rejected"] > 0, seen


@pytest.mark.parametrize("name", ["cbor", "mqtt", "wire", "catalog_toml"])
@FUZZ
@given(data=st.binary(max_size=200))
def test_decoder_on_raw_bytes(name, data):
    _judge(name, data)


def test_seeds_are_accepted():
    """The unmutated seeds decode: the fuzzer starts from valid input."""
    inst = mutate.instruction()
    assert targets.t_cbor(wire.encode(inst)) == inst
    kid, payload = targets.t_cose(mutate.signed_instruction())
    assert kid == targets.KID and targets.t_schema(payload)["seq"] == 7
    packets = targets.t_mqtt(mutate.mqtt_stream())
    assert [p.type for p in packets] == [2, 3, 4, 9, 13]
    assert targets.t_wire(wire.encode(mutate.report()))["dev"] == "fuzz-dev"
    assert targets.t_report(mutate.encode_cbor(mutate.report())).classes
    for name in ("board_device", "board_host"):
        assert targets.run(name, mutate.encode_json(mutate.board())) == "ok"
    assert targets.run("catalog", mutate.encode_json(mutate.catalog_doc())) == "ok"
    assert targets.run("catalog_toml", mutate.catalog_text()) == "ok"


@FUZZ
@given(st.integers(min_value=0, max_value=2 ** 48))
def test_a_mutated_instruction_never_verifies_with_another_payload(seed):
    signed = mutate.signed_instruction()
    original = wire.encode(mutate.instruction())
    rng = random.Random(seed)
    data = mutate.mutate_bytes(signed, rng, rng.randint(1, 4))
    try:
        _, payload = targets.t_cose(data)
    except targets.ALLOWED["cose"]:
        return
    assert payload == original


def test_deep_nesting_is_refused_by_depth_not_by_recursion():
    for opener in (b"\x81", b"\xa1\x00", b"\xd8\x11"):
        with pytest.raises(targets.dev_cbor.CBORError):
            targets.t_cbor(mutate.deep_nesting(5000, opener))
        with pytest.raises(wire.WireError):
            wire.decode(b"\xa1\x00" + mutate.deep_nesting(3000, opener))


def _corpus():
    out = []
    if os.path.isdir(targets.CORPUS_DIR):
        for name in sorted(os.listdir(targets.CORPUS_DIR)):
            for f in sorted(os.listdir(os.path.join(targets.CORPUS_DIR, name))):
                out.append((name, f))
    return out


@pytest.mark.parametrize("name,fname", _corpus())
def test_corpus_replays(name, fname):
    with open(os.path.join(targets.CORPUS_DIR, name, fname), "rb") as f:
        data = f.read()
    _judge(name, data)


MP_CHECK = r'''
import sys, json
from capdev import cbor
from capdev.platform import unhexlify
out = []
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    try:
        cbor.loads(unhexlify(line[1:]), 8, 4096)
        out.append("ok")
    except cbor.CBORError as e:
        out.append(e.reason)
    except Exception as e:
        out.append("UNDOCUMENTED " + type(e).__name__ + " " + str(e))
print(json.dumps(out))
'''

MP_BATCH = 400


def test_device_cbor_decoder_agrees_on_both_runtimes():
    """One MicroPython process decodes a batch of mutated/random inputs; every
    outcome is a value or a CBORError, and matches CPython reason for reason."""
    rng = random.Random(9)
    gen = GENERATORS["cbor"]
    inputs = [gen(rng) for _ in range(MP_BATCH)] + [mutate.deep_nesting(200), b"\xbf", b"\x7f\xff"]
    stdin = "\n".join("x" + d.hex() for d in inputs) + "\n"
    results = {}
    for runtime in fwrun.RUNTIMES:
        p = fwrun.run(runtime, MP_CHECK, heap_kb=256, input=stdin, timeout=120)
        assert p.returncode == 0, p.stderr
        results[runtime] = json.loads(p.stdout.strip().splitlines()[-1])
    for runtime, res in results.items():
        assert len(res) == len(inputs)
        bad = [r for r in res if r.startswith("UNDOCUMENTED")]
        assert not bad, (runtime, bad[:5])
    assert results["micropython"] == results["cpython"]
    assert 0 < results["micropython"].count("ok") < len(inputs)
