"""`capshard plan`: a dry run from files, text and --json."""

import json

from capshard.cli import main
from capshard.catalog import DATA_DIR

DEVICE = f"{DATA_DIR}/examples/device-esp32s3.json"
NEEDS = f"{DATA_DIR}/examples/needs-call-and-bank.json"


def test_plan_json_is_the_wire_form(capsys):
    assert main(["plan", "--agreement", "standard", "--device", DEVICE, "--needs", NEEDS,
                 "--now", "1000", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["tier"] == "standard" and plan["expires_at"] == 1000 + 1800
    assert {"dscp-marker", "acl-stateless"} <= set(plan["profile"])
    assert any(o["slot"] == "vpn.cipher" for o in plan["profile"].values())  # bank: confidentiality
    assert all(o["op"] == "activate" for o in plan["operations"])
    assert any(w.startswith("vpn.cipher: chose") for w in plan["explanations"])


def test_plan_text_shows_profile_and_reasons(capsys):
    assert main(["plan", "--agreement", "basic", "--device", DEVICE, "--needs", NEEDS, "--now", "0"]) == 0
    out = capsys.readouterr().out
    assert "plan for a device on board 'esp32s3', tier 'basic'" in out
    assert "why:" in out and "not allowed by tier 'basic'" in out  # basic has no VPN


def test_plan_errors_name_the_culprit(tmp_path, capsys):
    needs = tmp_path / "needs.json"
    needs.write_text(json.dumps({"classes": {"gaming": {"bw_kbps": 10}}}))
    assert main(["plan", "--agreement", "basic", "--device", DEVICE, "--needs", str(needs)]) == 2
    err = capsys.readouterr().err
    assert "class 'gaming'" in err and "unknown QoS class" in err
    assert main(["plan", "--agreement", "gold", "--device", DEVICE, "--needs", NEEDS]) == 2
    assert "no tier 'gold'" in capsys.readouterr().err
    bad_catalog = tmp_path / "cat.toml"
    bad_catalog.write_text("schema = 2\n")
    assert main(["plan", "--catalog", str(bad_catalog), "--agreement", "basic", "--device", DEVICE,
                 "--needs", NEEDS]) == 2
    assert "cat.toml: schema: unsupported schema 2" in capsys.readouterr().err
