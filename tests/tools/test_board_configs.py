"""Board configs: every shipped file is valid on the host (schema) and on the
device (boot-time checks, both runtimes); a wrong or missing field is named,
with the file, on both sides."""

import copy
import json

import pytest

from capshard import boards

KINDS = ["esp32", "esp32s3-psram", "openwrt-router", "simulated"]

# (mutation, field the error must name)
BAD = [
    (lambda b: b.pop("heap_kb"), "heap_kb"),
    (lambda b: b["capacities"].pop("mem_kb"), "capacities.mem_kb"),
    (lambda b: b.__setitem__("runtime", "lua"), "runtime"),
    (lambda b: b["broker"].__setitem__("port", "1883"), "broker.port"),
    (lambda b: b["broker"].__setitem__("port", 70000), "broker.port"),
    (lambda b: b.__setitem__("heap_kbb", 128), "heap_kbb"),
    (lambda b: b["broker"].update({"tls": True}) or b["broker"].pop("ca_file", None), "broker.ca_file"),
    (lambda b: b.__setitem__("traffic_sources", ["carrier-pigeon"]), "traffic_sources"),
    (lambda b: b.__setitem__("shards", "capdev.shards.counter"), "shards"),
    (lambda b: b["capacities"].__setitem__("cpu", True), "capacities.cpu"),
]


def test_board_kinds_are_the_four_documented_ones():
    assert boards.kinds() == sorted(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_configs_are_valid_on_the_host(kind):
    b = boards.load(kind)
    assert b["board"] == kind
    assert b["free_heap_floor_kb"] < b["heap_kb"]
    if b["broker"].get("tls"):
        assert b["broker"]["ca_file"]


def test_host_errors_name_file_and_field(tmp_path):
    base = boards.load("simulated")
    for mutate, field in BAD:
        b = copy.deepcopy(base)
        mutate(b)
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(b))
        with pytest.raises(boards.BoardConfigError) as e:
            boards.load(str(path))
        assert str(path) in str(e.value) and f"'{field}" in str(e.value), (field, str(e.value))
    (tmp_path / "broken.json").write_text("{ not json")
    with pytest.raises(boards.BoardConfigError, match="broken.json: not valid JSON"):
        boards.load(str(tmp_path / "broken.json"))
    with pytest.raises(boards.BoardConfigError, match="known boards: esp32"):
        boards.load("no-such-board")


def test_device_accepts_shipped_configs_and_names_bad_fields(fw, tmp_path):
    """The same cases on the device side, in one firmware process per runtime."""
    base = boards.load("simulated")
    cases = {}
    for kind in KINDS:
        p = tmp_path / f"{kind}.json"
        p.write_text(json.dumps(boards.load(kind)))
        cases[str(p)] = None
    for i, (mutate, field) in enumerate(BAD):
        b = copy.deepcopy(base)
        mutate(b)
        p = tmp_path / f"bad{i}.json"
        p.write_text(json.dumps(b))
        cases[str(p)] = field
    missing = str(tmp_path / "absent.json")
    cases[missing] = ""
    code = f"""
import json
from capdev import config
out = {{}}
for path in {sorted(cases)!r}:
    try:
        config.load_board(path)
        out[path] = None
    except config.ConfigError as e:
        out[path] = str(e)
print(json.dumps(out))
"""
    got = fw.run_json(code)
    for path, field in cases.items():
        if field is None:
            assert got[path] is None, (path, got[path])
        elif field == "":
            assert got[path] == f"{path}: file not found"
        else:
            assert got[path] and got[path].startswith(path + ":") and f"'{field}'" in got[path], (field, got[path])


def test_device_builds_a_tls_context_only_from_a_present_ca(fw, tmp_path):
    from capshard.deploy_broker import make_certificates

    make_certificates(str(tmp_path), ["127.0.0.1"])
    tls = {"host": "127.0.0.1", "port": 8883, "tls": True, "ca_file": "ca.crt"}
    plain = {"host": "127.0.0.1", "port": 1883}
    code = f"""
import json
from capdev import config
root = {str(tmp_path)!r}
out = []
for broker in ({tls!r}, {plain!r}, dict({tls!r}, ca_file="missing.der")):
    try:
        ctx = config.ssl_context({{"broker": broker}}, root)
        out.append("none" if ctx is None else "ctx")
    except config.ConfigError as e:
        out.append(str(e))
print(json.dumps(out))
"""
    got = fw.run_json(code)
    assert got[:2] == ["ctx", "none"]
    assert got[2].endswith("missing.der: CA file not found (field 'broker.ca_file')")
