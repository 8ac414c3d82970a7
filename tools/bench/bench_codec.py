"""The device's per-message hot paths -- CBOR, HMAC, COSE_Mac0 -- timed on both
runtimes from the same firmware code:

  micropython  the unix port, firmware deployed as .mpy files, 128 KiB heap
  cpython      the same sources under CPython

Messages (built here, as the device and the provider build them):
  report       a QoS report from capdev.rnma.report.ReportBuilder (3 classes,
               2 sensitive destinations)
  health       a health message shaped like capdev.agent.Agent.health
               (3 shards, 2 events)
  instruction  a full instruction with 3 activate ops, signed by the
               provider's signer (capshard.wire.sign_instruction, pycose)

Operations, each next to a baseline the runtime implements in C:
  cbor_enc_*   capdev.cbor.dumps         vs json.dumps of the same object
  cbor_dec     capdev.cbor.loads of the instruction payload
                                         vs json.loads of the same as JSON
  hmac         capdev.platform.hmac_sha256 over the MAC structure
                                         vs two hashlib.sha256 digests over
                                         the bytes HMAC hashes (64 + n, 64 + 32):
                                         the floor for any HMAC
  hmac_keyed   capdev.platform.hmac_sha256_keyed, pads computed once
               (what cose uses for the instruction key)
  verify       capdev.cose.mac0_verify of the instruction
  receive      capdev.cmm.pipeline.InstructionPipeline.receive (verify, decode,
               schema, freshness; store in a temp dir, nothing persisted)

us: microseconds per operation, median of BATCHES timed batches (time.ticks_us
on MicroPython, time.perf_counter_ns on CPython), loop overhead included (the
"noop" line shows it). alloc_b (MicroPython only): heap bytes allocated per
operation, from gc.mem_alloc() around a batch run with the collector disabled
(GC block granularity; memory the code frees explicitly is not counted).

Last line (MicroPython figures; cbor_enc_us is the QoS report):
  codec: cbor_enc_us=A cbor_dec_us=B hmac_us=C verify_us=D alloc_verify_b=E
"""

import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "host"))

from capshard import fwrun, wire  # noqa: E402
from bench_device import SHARDS  # noqa: E402  (same directory)

KEY = bytes(range(32))
KID = b"bench-1#1"
DEVICE = "bench-1"
OPS = SHARDS  # the three shards bench-device runs: a typical instruction
BATCHES = 7
BATCH_MS = 15      # a timed batch runs at least this long
ALLOC_COUNT = 16   # operations per allocation batch (collector off)
TIMEOUT_S = 120

# Runs on the device runtime. Placeholders: @RAW@ @JSON@ @STATE@ @KID@ @DEV@
# @BATCHES@ @BATCH_MS@ @ALLOC_COUNT@. Prints one JSON line per figure.
FIRMWARE = r"""
import gc, hashlib, json, time
from capdev import cbor, cose, platform
from capdev.cmm.pipeline import InstructionPipeline
from capdev.cmm.store import DeviceStore
from capdev.rnma.report import ReportBuilder

MP = platform.IS_MICROPYTHON
if MP:
    now = time.ticks_us
    def elapsed_us(t0):
        return time.ticks_diff(time.ticks_us(), t0)
else:
    now = time.perf_counter_ns
    def elapsed_us(t0):
        return (time.perf_counter_ns() - t0) / 1000

def batch_us(fn, n):
    gc.collect()
    t0 = now()
    for _ in range(n):
        fn()
    return elapsed_us(t0)

def timed(fn):
    # grow the batch until it lasts BATCH_MS, then take the median of BATCHES
    fn()
    n = 1
    while batch_us(fn, n) < @BATCH_MS@ * 1000 and n < 1 << 20:
        n *= 2
    per = sorted(batch_us(fn, n) / n for _ in range(@BATCHES@))
    return per[len(per) // 2]

def alloc_b(fn):
    if not MP:
        return None
    # fewer operations when a batch does not fit the heap with the collector off
    n = @ALLOC_COUNT@
    while n:
        gc.collect()
        gc.disable()
        try:
            a0 = gc.mem_alloc()
            for _ in range(n):
                fn()
            return (gc.mem_alloc() - a0) / n
        except MemoryError:
            n //= 2
        finally:
            gc.enable()
    raise MemoryError("one operation does not fit the heap")

def figure(name, fn):
    print(json.dumps([name, timed(fn), alloc_b(fn)]))

KEY = bytes(range(32))
RAW = platform.unhexlify("@RAW@")
INST_JSON = @JSON@

rb = ReportBuilder("@DEV@", clock=lambda: 1700000000)
for t in range(0, 30000, 1000):
    rb.sample(4, 2400 + t // 100, t)
    rb.sample(3, 180, t)
    rb.sample(0, 64, t)
report = rb.build(rb.active(30000), {4: 3, 3: 1, 0: 1}, {4: 38, 3: 21, 0: None},
                  {4: 90, 3: 75, 0: 60}, 2, ["bank.example.com", "mail.example.org"])
health = {
    "v": 1, "dev": "@DEV@", "t": 1700000000,
    "events": [
        {"shard": "counter", "ev": "transition", "t": 81234, "reason": "", "from": "starting", "to": "running"},
        {"shard": "loop-lag", "ev": "restart", "t": 82011, "reason": "ValueError: step"},
    ],
    "shards": {
        "null-cipher": {"state": "running", "heap_kb": 2, "expires_in_s": None, "alt_of": None},
        "counter": {"state": "running", "heap_kb": 1, "expires_in_s": 540, "alt_of": None},
        "loop-lag": {"state": "errored", "heap_kb": 1, "expires_in_s": None, "alt_of": "counter"},
    },
    "heap_free": 61840, "heap_used": 69232, "heap_peak": 74112,
}

mac0 = cbor.loads(RAW, allow_tags=(17,)).value
protected, payload = mac0[0], mac0[2]
mac_structure = cbor.dumps(["MAC0", protected, b"", payload])
inner_floor = bytes(64 + len(mac_structure))
outer_floor = bytes(64 + 32)
store = DeviceStore("@STATE@").load()
pipe = InstructionPipeline("@DEV@", lambda kid: KEY if kid == b"@KID@" else None, store)
assert pipe.receive(RAW)[0] == "accept"
assert cbor.loads(payload, 8) == json.loads(INST_JSON)
print(json.dumps(["sizes", len(cbor.dumps(report)), len(cbor.dumps(health)), len(payload), len(mac_structure), len(RAW)]))

figure("noop", lambda: None)
figure("cbor_enc_report", lambda: cbor.dumps(report))
figure("json_enc_report", lambda: json.dumps(report))
figure("cbor_enc_health", lambda: cbor.dumps(health))
figure("json_enc_health", lambda: json.dumps(health))
figure("cbor_dec", lambda: cbor.loads(payload, 8))
figure("json_dec", lambda: json.loads(INST_JSON))
figure("hmac", lambda: platform.hmac_sha256(KEY, mac_structure))
if hasattr(platform, "hmac_key"):  # absent before the pads were precomputed
    prepared = platform.hmac_key(KEY)
    figure("hmac_keyed", lambda: platform.hmac_sha256_keyed(prepared, mac_structure))
figure("sha256_x2", lambda: (hashlib.sha256(inner_floor).digest(), hashlib.sha256(outer_floor).digest()))
figure("verify", lambda: cose.mac0_verify(RAW, KEY))
figure("receive", lambda: pipe.receive(RAW))
"""

# (figure, baseline it is compared with)
PAIRS = [("cbor_enc_report", "json_enc_report"), ("cbor_enc_health", "json_enc_health"),
         ("cbor_dec", "json_dec"), ("hmac", "sha256_x2")]


def instruction():
    body = wire.make_instruction(DEVICE, 1, OPS, True, 1_700_000_000, instruction_id="bench-i1")
    return body, wire.sign_instruction(body, KEY, KID)


def firmware_code(state_path):
    body, raw = instruction()
    subs = {"@RAW@": raw.hex(), "@JSON@": repr(json.dumps(body)), "@STATE@": state_path,
            "@KID@": KID.decode(), "@DEV@": DEVICE, "@BATCHES@": str(BATCHES),
            "@BATCH_MS@": str(BATCH_MS), "@ALLOC_COUNT@": str(ALLOC_COUNT)}
    code = FIRMWARE
    for k, v in subs.items():
        code = code.replace(k, v)
    return code


def measure(runtime):
    """{figure: (us, alloc_b or None)} and the message sizes, from one run."""
    tmp = tempfile.mkdtemp(prefix="bench-codec-")
    try:
        code = firmware_code(os.path.join(tmp, "state.json"))
        if runtime == "micropython":
            p = fwrun.run("micropython", code, heap_kb=fwrun.DEFAULT_HEAP_KB, deploy="mpy",
                          timeout=TIMEOUT_S)
        else:
            p = fwrun.run("cpython", code, timeout=TIMEOUT_S)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if p.returncode != 0:
        raise SystemExit(f"{runtime} run failed (rc={p.returncode}):\n{p.stdout}\n{p.stderr}")
    figures, sizes = {}, None
    for line in p.stdout.splitlines():
        row = json.loads(line)
        if row[0] == "sizes":
            sizes = row[1:]
        else:
            figures[row[0]] = (row[1], row[2])
    return figures, sizes


def report(runtime, figures, sizes):
    print(f"{runtime}: bytes report={sizes[0]} health={sizes[1]} payload={sizes[2]} "
          f"mac_structure={sizes[3]} cose={sizes[4]}")
    for name, (us, alloc) in figures.items():
        extra = f" alloc_b={alloc:.0f}" if alloc is not None else ""
        print(f"{runtime}: {name} us={us:.2f}{extra}")
    for name, base in PAIRS:
        print(f"{runtime}: {name}/{base} = {figures[name][0] / figures[base][0]:.1f}x")


def main():
    results = {}
    for runtime in ("cpython", "micropython"):
        figures, sizes = measure(runtime)
        report(runtime, figures, sizes)
        results[runtime] = figures
    mp = results["micropython"]
    print(f"codec: cbor_enc_us={mp['cbor_enc_report'][0]:.1f} cbor_dec_us={mp['cbor_dec'][0]:.1f} "
          f"hmac_us={mp['hmac'][0]:.1f} verify_us={mp['verify'][0]:.1f} "
          f"alloc_verify_b={mp['verify'][1]:.0f}")


if __name__ == "__main__":
    main()
