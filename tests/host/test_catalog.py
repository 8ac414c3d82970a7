"""The catalog and agreements: the shipped example, and bad input that must
be refused with an error naming the file, the entry and the field."""

import copy
import re
import tomllib

import pytest

from capshard.catalog import (DEFAULT_AGREEMENTS, DEFAULT_CATALOG, CatalogError, load_agreements,
                              load_catalog, parse_agreements, parse_catalog)


def _doc(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


CATALOG_DOC = _doc(DEFAULT_CATALOG)
AGREEMENTS_DOC = _doc(DEFAULT_AGREEMENTS)


def _shard(doc, shard_id):
    return next(s for s in doc["shard"] if s["id"] == shard_id)


def test_shipped_catalog_is_realistic():
    catalog = load_catalog()
    assert len(catalog.capabilities) >= 4 and len(catalog.shards) >= 30
    assert {"vpn", "traffic-shaping", "security-filtering"} <= set(catalog.capabilities)
    assert [s.split(".")[1] for s in catalog.capabilities["vpn"].slots] == ["cipher", "tunnel", "auth"]
    assert [s.split(".")[1] for s in catalog.capabilities["traffic-shaping"].slots] == \
        ["marker", "shaper", "scheduler"]
    assert all(s.module.startswith("capdev.shards.") for s in catalog.shards.values())
    # the cross-capability dependency is resolved to the shards of the slot
    assert catalog.requirements["ids-lite"] == (catalog.slots["monitoring.flow-export"].shards,)
    assert catalog.conflicts("cake-lite", "strict-priority") and catalog.conflicts("strict-priority", "cake-lite")


def test_only_the_test_tier_allows_the_null_cipher():
    tiers = load_agreements(catalog=load_catalog())
    assert len(tiers) >= 3 and "test" in tiers
    assert [name for name, t in tiers.items() if "null-cipher" in t.allowed] == ["test"]


def test_test_only_shard_named_by_a_production_tier_is_refused():
    doc = copy.deepcopy(AGREEMENTS_DOC)
    doc["tiers"]["premium"]["allow"] = ["vpn", "null-cipher"]
    with pytest.raises(CatalogError) as e:
        parse_agreements(doc, load_catalog(), "agreements.toml")
    assert (e.value.source, e.value.entry, e.value.field) == ("agreements.toml", "tier 'premium'", "allow")
    assert "test-only" in str(e.value)


def _catalog_error(mutate):
    doc = copy.deepcopy(CATALOG_DOC)
    mutate(doc)
    with pytest.raises(CatalogError) as e:
        parse_catalog(doc, "catalog.toml")
    return e.value


def test_dependency_cycle_is_named():
    def mutate(doc):
        _shard(doc, "netflow-v9")["requires"] = ["ids-lite"]  # ids-lite requires monitoring.flow-export
    err = _catalog_error(mutate)
    assert err.field == "requires" and "dependency cycle" in err.reason
    assert "ids-lite" in err.reason and "netflow-v9" in err.reason


@pytest.mark.parametrize("cost, field, words", [
    ({"cpu": -3, "mem_kb": 12, "bw_kbps": 0}, "cost.cpu", "must be >= 0"),
    ({"cpu": 3, "bw_kbps": 0}, "cost.mem_kb", "missing"),
    ({"cpu": 3, "mem_kb": 1.5, "bw_kbps": 0}, "cost.mem_kb", "must be an integer"),
])
def test_bad_costs_are_named(cost, field, words):
    err = _catalog_error(lambda doc: _shard(doc, "aes128-ctr").__setitem__("cost", cost))
    assert (err.source, err.entry, err.field) == ("catalog.toml", "shard 'aes128-ctr'", field)
    assert words in err.reason
    assert str(err).startswith("catalog.toml: shard 'aes128-ctr': " + field)


def test_missing_cost_table_unknown_slot_and_board():
    err = _catalog_error(lambda doc: _shard(doc, "wfq").pop("cost"))
    assert (err.entry, err.field, err.reason) == ("shard 'wfq'", "cost", "missing")
    err = _catalog_error(lambda doc: _shard(doc, "wfq").__setitem__("slot", "traffic-shaping.queue"))
    assert err.field == "slot" and "unknown slot" in err.reason
    err = _catalog_error(lambda doc: _shard(doc, "wfq").__setitem__("boards", ["esp32", "esp8266"]))
    assert err.field == "boards[1]" and "esp8266" in err.reason


def test_duplicate_id_and_unknown_requirement():
    err = _catalog_error(lambda doc: _shard(doc, "wfq").__setitem__("id", "drr"))
    assert err.field == "id" and "duplicate" in err.reason
    err = _catalog_error(lambda doc: _shard(doc, "wfq").__setitem__("requires", ["no-such-thing"]))
    assert err.field == "requires[0]" and "no-such-thing" in err.reason


def test_unknown_shard_in_agreement_is_named():
    doc = copy.deepcopy(AGREEMENTS_DOC)
    doc["tiers"]["standard"]["allow"].append("aes512-ctr")
    with pytest.raises(CatalogError) as e:
        parse_agreements(doc, load_catalog(), "agreements.toml")
    assert e.value.entry == "tier 'standard'" and e.value.field == "allow[5]"
    assert "aes512-ctr" in e.value.reason


def test_baseline_that_does_not_fit_the_board_is_refused():
    catalog = load_catalog()
    doc = copy.deepcopy(AGREEMENTS_DOC)
    tier = doc["tiers"]["premium"]
    tier["baseline"] = ["wmm-marker", "fw-stateful", "http-cache"]  # http-cache: not on esp32
    with pytest.raises(CatalogError) as e:
        parse_agreements(doc, catalog, "agreements.toml")
    assert e.value.field == "baseline" and "esp32" in e.value.reason
    tier["baseline"] = ["wmm-marker", "geoip-fw"]
    tier["boards"] = ["esp32s3"]
    tier["caps"] = {"cpu": 70, "mem_kb": 40, "bw_kbps": 1500}  # geoip-fw alone needs 48 KiB
    with pytest.raises(CatalogError) as e:
        parse_agreements(doc, catalog, "agreements.toml")
    assert "mem_kb" in e.value.reason


def test_incomplete_baseline_is_refused():
    doc = copy.deepcopy(AGREEMENTS_DOC)
    doc["tiers"]["test"]["baseline"] = ["dscp-marker", "acl-stateless", "aes128-ctr"]
    with pytest.raises(CatalogError) as e:
        parse_agreements(doc, load_catalog(), "agreements.toml")
    assert "capability 'vpn' is incomplete" in e.value.reason


def test_errors_name_the_file_on_disk(tmp_path):
    path = tmp_path / "broken.toml"
    # the first shard in the file is aes128-ctr; make its CPU cost negative
    path.write_text(re.sub(r"cost = \{ cpu = (\d+)", r"cost = { cpu = -\1", open(DEFAULT_CATALOG).read(), count=1))
    with pytest.raises(CatalogError) as e:
        load_catalog(str(path))
    assert str(e.value).startswith("broken.toml: shard 'aes128-ctr': cost.cpu:")
    path.write_text("schema = 1\n[boards\n")
    with pytest.raises(CatalogError, match="broken.toml: not valid TOML"):
        load_catalog(str(path))
