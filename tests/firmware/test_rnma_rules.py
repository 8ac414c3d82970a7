"""The classifier's rule tables: the prebuilt defaults (rules_table.py) match
their source text, and a board's JSON override compiles to the same form."""

from capshard import build


def test_generated_rules_table_is_current():
    with open(build.RULES_TABLE) as f:
        committed = f.read()
    assert committed == build.rules_table_source(), \
        "rules_table.py is stale: run `python -m capshard.build rules-table` (from host/)"


def test_prebuilt_defaults_equal_the_compiled_text(fw):
    code = """
import json
from capdev.rnma import rulebook, rules
built = rulebook.build_defaults()
d = rules.defaults()
print(json.dumps([bytes(built[0]) == bytes(d["ports"]), built[1] == d["names"],
                  built[2] == d["sensitive"], built[3] == d["integrity"], len(d["ports"]) % 8]))
"""
    assert fw.run_json(code) == [True, True, True, True, 0]


def test_port_rules_first_match_wins_for_defaults_and_overrides(fw, tmp_path):
    override = tmp_path / "rules.json"
    override.write_text('{"ports": [["udp", 4000, 4010, "telephony", 77], ["any", 4005, 4005, "oam", 90],'
                        ' ["50", 0, 0, "secure-tunnel", 88]]}')
    code = """
import json
from capdev.rnma import rules
from capdev.rnma.classify import Classifier
d = Classifier(rules.defaults())
o = Classifier(rules.load(%r))
out = [d.port_class(17, 53), d.port_class(6, 443), d.port_class(17, 9), d.port_class(50, 0),
       o.port_class(17, 4005), o.port_class(6, 4005), o.port_class(17, 4011), o.port_class(50, 0)]
try:
    rules.compiled({"ports": [["udp", 9, 8, "oam", 50]], "names": [], "sensitive": [], "integrity": []})
    out.append("accepted")
except ValueError as e:
    out.append(str(e))
print(json.dumps(out))
""" % str(override)
    out = fw.run_json(code)
    cls = {"telephony": 0, "network-control": 11, "standard": 9, "oam": 7, "secure-tunnel": 12}
    assert out[:4] == [[cls["network-control"], 90], [cls["standard"], 35], None, [cls["secure-tunnel"], 90]]
    assert out[4:8] == [[cls["telephony"], 77], [cls["oam"], 90], None, [cls["secure-tunnel"], 88]]
    assert out[8] == "port range 9-8"
