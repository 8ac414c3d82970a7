"""`capshard classify FILE [--json]` over real captures read from the shared data."""

import csv
import json
import os
import subprocess
import sys

from capshard import paths

TRAFFIC = os.path.join(paths.SHARED_DIR, "data", "traffic")


def run(*args):
    return subprocess.run([sys.executable, "-m", "capshard", "classify", *args],
                          capture_output=True, text=True, timeout=60)


def label(name):
    with open(os.path.join(TRAFFIC, "labels.csv")) as f:
        return {r["file"]: r["class"] for r in csv.DictReader(f)}[name]


def test_json_output_has_dominant_class_and_flows():
    for name in ("zoom2.pcap", "ftp.pcap", "BGP_Cisco_hdlc_slarp.pcap"):
        p = run(os.path.join(TRAFFIC, "pcap", name), "--json")
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        assert out["class"] == label(name)
        assert out["flows"]
        for f in out["flows"]:
            assert set(f) >= {"proto", "src", "sport", "dst", "dport", "bytes", "class"}
        total = sum(f["bytes"] for f in out["flows"])
        by_class = {}
        for f in out["flows"]:
            by_class[f["class"]] = by_class.get(f["class"], 0) + f["bytes"]
        assert max(by_class, key=by_class.get) == out["class"]
        assert total == sum(out["bytes_by_class"].values())


def test_ftp_data_channel_is_bulk_and_text_output():
    p = run(os.path.join(TRAFFIC, "pcap", "ftp.pcap"))
    assert p.returncode == 0
    assert p.stdout.startswith("ftp.pcap: high-throughput-data")
    data = [ln for ln in p.stdout.splitlines() if ":24523" in ln]
    assert data and "high-throughput-data" in data[0]


def test_bad_files_get_a_clear_message(tmp_path):
    src = open(os.path.join(TRAFFIC, "pcap", "webex.pcap"), "rb").read()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(src[:20000])
    p = run(str(cut), "--json")
    assert p.returncode == 0
    assert "truncated record" in p.stderr
    assert json.loads(p.stdout)["packets"] > 0
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture")
    p = run(str(junk))
    assert p.returncode == 1 and "not a pcap or pcapng file" in p.stderr
    p = run(str(tmp_path / "missing.pcap"))
    assert p.returncode == 2 and "no such file" in p.stderr
