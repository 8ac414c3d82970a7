"""Classifier and agent behaviour on both runtimes: synthetic traffic shapes,
real captures read by the firmware's own pcap reader, bad input that is counted
and never raised, and the QoS report's hysteresis, rate limit and size cap."""

import csv
import os

import cbor2

from capshard import paths

# Importing the RNMA from .py sources compiles it on the heap (~100 KiB peak);
# boards run precompiled .mpy. Tests give the interpreter room for the sources.
HEAP_KB = 256
TRAFFIC = os.path.join(paths.SHARED_DIR, "data", "traffic")
# Small captures, one or two per kind, read by the firmware under both runtimes.
SAMPLE = ["dns.pcap", "teso.pcapng", "activision.pcap", "esp.pcapng", "tailscale.pcap",
          "iax.pcap", "dazn.pcapng", "exe_download.pcap", "snmp.pcap", "stun_zoom.pcapng",
          "google_ssl.pcap", "bittorrent_utp.pcap"]


def labels():
    with open(os.path.join(TRAFFIC, "labels.csv")) as f:
        return {r["file"]: r["class"] for r in csv.DictReader(f)}


def test_synthetic_shapes_classify_by_kind(fw):
    code = """
from capdev.rnma import summary, synth, synth_tools
from capdev.rnma.monitor import Monitor
import json
out = {}
for k in synth.SHAPES:
    m = Monitor()
    synth_tools.feed(m, synth.shape(k, 0, 12000, 5))
    summary.finish(m)
    out[k] = [summary.dominant(m), summary.security_level(m)]
print(json.dumps(out))
"""
    out = fw.run_json(code, heap_kb=HEAP_KB)
    assert out == {
        "game": ["real-time-interactive", "none"],
        "call": ["telephony", "none"],
        "video": ["multimedia-streaming", "none"],
        "bulk": ["high-throughput-data", "none"],
        "browsing": ["standard", "none"],
        "banking": ["standard", "confidentiality"],
    }


def test_reasons_are_numbers_with_their_texts_in_classify(fw):
    # The classifier carries a reason as a number (classify._WHY_*) and
    # summary.reason() turns it into its line of classify.REASONS.
    code = """
from capdev.rnma import summary, synth, synth_tools
from capdev.rnma.monitor import Monitor
import json
out = {}
for k in ("game", "call", "bulk"):
    m = Monitor()
    synth_tools.feed(m, synth.shape(k, 0, 12000, 5))
    out[k] = [summary.reason(m.classifier.classify(m.table, s)[2]) for s in m.table.slots()]
print(json.dumps(out))
"""
    out = fw.run_json(code, heap_kb=HEAP_KB)
    assert out == {"game": ["service port"], "call": ["real-time media with audio-sized packets"],
                   "bulk": ["http download"]}


def test_every_reason_number_has_one_text(monkeypatch):
    monkeypatch.syspath_prepend(paths.FIRMWARE_DIR)
    from capdev.rnma import classify  # CPython: const() names stay visible

    numbers = sorted(v for k, v in vars(classify).items() if k.startswith("_WHY_"))
    texts = classify.REASONS.split("\n")
    assert numbers == list(range(len(texts)))
    assert len(set(texts)) == len(texts)


# RFC 4594's DSCP -> service class table, written out independently of the firmware's.
RFC4594 = {46: "telephony", 40: "signaling", 34: "multimedia-conferencing", 36: "multimedia-conferencing",
           38: "multimedia-conferencing", 32: "real-time-interactive", 26: "multimedia-streaming",
           28: "multimedia-streaming", 30: "multimedia-streaming", 24: "broadcast-video", 18: "low-latency-data",
           20: "low-latency-data", 22: "low-latency-data", 16: "oam", 10: "high-throughput-data",
           12: "high-throughput-data", 14: "high-throughput-data", 8: "low-priority-data", 48: "network-control",
           56: "network-control"}


def test_dscp_marks_map_to_rfc4594_classes(fw):
    code = """
import json
from capdev.rnma import classify, rules
out = {}
for d in range(64):
    c = classify._dscp_class(d)
    out[d] = None if c is None else rules.CLASSES[c]
print(json.dumps(out))
"""
    got = fw.run_json(code)
    assert {int(d): c for d, c in got.items() if c is not None} == RFC4594


def test_real_captures_on_both_runtimes(fw):
    files = [os.path.join(TRAFFIC, "pcap", n) for n in SAMPLE]
    code = f"""
from capdev.rnma import pcap, summary
from capdev.rnma.monitor import Monitor
import json
out = []
for path in {files!r}:
    m = Monitor(max_flows=64)
    r = pcap.replay(path, m)
    summary.finish(m)
    out.append([summary.dominant(m), r.error, m.packets])
print(json.dumps(out))
"""
    out = fw.run_json(code, timeout=120, heap_kb=HEAP_KB)
    lab = labels()
    assert [o[0] for o in out] == [lab[n] for n in SAMPLE]
    assert all(o[1] is None and o[2] > 0 for o in out)


def test_bad_input_is_counted_never_raised(fw, tmp_path):
    src = os.path.join(TRAFFIC, "pcap", "zoom2.pcap")
    data = open(src, "rb").read()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:5000])
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(data[:24] + b"\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\x7f\xff\xff\xff\x7f" + data[40:200])
    code = f"""
from capdev.rnma import pcap, summary, synth, synth_tools
from capdev.rnma import packet as pk
from capdev.rnma.monitor import Monitor
import json
m = Monitor(max_flows=4)
r1 = pcap.replay({str(cut)!r}, m)
r2 = pcap.replay({str(bad)!r}, m)
r3 = pcap.replay({str(tmp_path / 'missing.pcap')!r}, m)
r = synth.Rand(7)
for i in range(400):  # garbage frames on every link type we know and some we do not
    n = r.below(90)
    frame = bytes(r.below(256) for _ in range(n))
    m.packet(10 * i, (1, 101, 113, 0, 9, 276, 77)[i % 7], frame)
hello = synth.client_hello('www.example.org')
for n in range(20, len(hello)):
    m.packet(5000 + n, pk.RAW, synth_tools.ipv4(6, b'\\x0a\\x00\\x00\\x01', 40000 + n, b'\\x0a\\x00\\x00\\x02', 443, hello[:n]))
for i in range(30):  # DNS "responses" with random bodies
    m.packet(9000 + i, pk.RAW, synth_tools.ipv4(17, b'\\x08\\x08\\x08\\x08', 53, b'\\x0a\\x00\\x00\\x01', 3000 + i,
             b'\\x12\\x34\\x81\\x80' + bytes(r.below(256) for _ in range(20))))
summary.finish(m)
print(json.dumps([r1.records, r1.error, r2.error, r3, summary.problems(m), m.table.evicted, len(m.table)]))
"""
    records, err1, err2, r3, problems, evicted, live = fw.run_json(code, heap_kb=HEAP_KB)
    assert records > 0 and err1.startswith("truncated")
    assert err2.startswith("corrupt record length")
    assert r3 is None
    assert problems["source"] >= 3  # the three capture problems were reported
    assert problems["unknown-link"] > 0 and problems["malformed-packet"] > 0
    assert problems["malformed-dns"] > 0
    assert evicted > 0 and live == 0


def test_report_hysteresis_rate_limit_and_size_cap(fw):
    code = """
from capdev.rnma.report import ReportBuilder
from capdev import cbor, platform
import json
rb = ReportBuilder('dev-1', min_interval_ms=10000, hold_ms=30000, change_pct=25, min_delta_kbps=16,
                   clock=lambda: 1700000000)
log = []
def step(now, kbps, flows):
    for c in kbps:
        rb.sample(c, kbps[c], now)
    r = rb.update(now, flows, {0: 40}, {0: 80, 4: 90}, 0, [])
    log.append(None if r is None else sorted(r['classes']))
    return r
step(0, {0: 100}, {0: 1})              # first report
step(1000, {0: 100, 4: 5000}, {0: 1, 4: 1})   # change inside the rate limit: held back
step(5000, {0: 100, 4: 5000}, {0: 1, 4: 1})
step(10000, {0: 100, 4: 5000}, {0: 1, 4: 1})  # the held-back change goes out
step(21000, {0: 110, 4: 5100}, {0: 1, 4: 1})  # small wobble: nothing
step(32000, {0: 0, 4: 5000}, {4: 1})       # telephony quiet, but within hold time
r = step(60000, {0: 0, 4: 5000}, {4: 1})   # gone for longer than the hold: reported
rb2 = ReportBuilder('dev-2', cap=200, clock=lambda: 1700000000)
for c in range(13):
    rb2.sample(c, 1000 * (c + 1), 0)
big = rb2.update(0, dict((c, 1) for c in range(13)), {}, {}, 2, ['payments%d.example-bank.com' % i for i in range(8)])
print(json.dumps([log, rb.suppressed, r['seq'], platform.hexlify(cbor.dumps(r)), platform.hexlify(cbor.dumps(big)), rb2.truncated]))
"""
    log, suppressed, seq, enc, enc_big, truncated = fw.run_json(code, heap_kb=HEAP_KB)
    assert log == [["telephony"], None, None, ["multimedia-streaming", "telephony"], None, None,
                   ["multimedia-streaming"]]
    assert suppressed >= 1 and seq == 3
    rep = cbor2.loads(bytes.fromhex(enc))
    assert rep == {"v": 1, "dev": "dev-1", "seq": 3, "t": 1700000000,
                   "classes": {"multimedia-streaming": {"bw_kbps": 5100, "lat_ms": None, "flows": 1, "conf": 90}},
                   "security": {"level": "none", "dests": []}}
    big = bytes.fromhex(enc_big)
    assert len(big) <= 200 and truncated > 0
    small = cbor2.loads(big)
    assert small["security"]["level"] == "confidentiality"
    # the classes kept are the ones with the most bandwidth
    kept = [v["bw_kbps"] for v in small["classes"].values()]
    assert kept and min(kept) >= 13000 - 1000 * (len(kept) - 1)
