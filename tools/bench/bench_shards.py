"""Measure each VPN and traffic-shaping shard under MicroPython (compiled .mpy,
as a board runs it) and write the figures into the catalog's shard entries.

Per shard, in a fresh MicroPython process:
  load_kb  heap the module's code takes (import, after a collection)
  run_kb   heap held while running: code + instance + its working set
  cpu      ms of CPU per KiB (ciphers, tunnel) or per operation (the rest)

Catalog write-back (cost fields only, and the module path):
  mem_kb = ceil(max(load_kb, run_kb))
  cpu    = share of one core the shard needs at its reference load on the
           MicroPython unix port: 1 Mbit/s for per-KiB shards, 200 packets/s
           for markers, shapers and schedulers, 1 login/s for auth; 1..100.
Raw figures go to build/bench/shards.json. Last line:
  shards: measured=N max_heap_kb=H aes128_kib_per_s=R
"""

import json
import math
import os
import re
import subprocess
import sys

from capshard import fwrun
from capshard.paths import REPO_ROOT

CATALOG = os.path.join(REPO_ROOT, "host", "capshard", "data", "catalog.toml")
OUT = os.path.join(REPO_ROOT, "build", "bench", "shards.json")
HEAP_KB = 256
RUN_MS = 400
REF_KIB_PER_S = 1000 / 8 / 1.024  # 1 Mbit/s in KiB/s
REF_PACKETS_PER_S = 200
REF_LOGINS_PER_S = 1

KIB = os.urandom(1024).hex()

# shard id -> (module, unit, setup code, one operation)
SHARDS = {
    "aes128-ctr": ("capdev.shards.vpn.aes128_ctr", "kib",
                   "from capdev.shards.vpn import etm\nsuite = etm.Suite(inst.suite_id, bytes(32))\n"
                   f"data = p.unhexlify('{KIB}')\nhdr = bytes(16)\n",
                   "inst.seal(suite, b'12345678', hdr, data)"),
    "aes256-ctr": ("capdev.shards.vpn.aes256_ctr", "kib",
                   "from capdev.shards.vpn import etm\nsuite = etm.Suite(inst.suite_id, bytes(32))\n"
                   f"data = p.unhexlify('{KIB}')\nhdr = bytes(16)\n",
                   "inst.seal(suite, b'12345678', hdr, data)"),
    "null-cipher": ("capdev.shards.null_cipher", "kib",
                    "c = tunnel.as_cipher(inst)\n"
                    f"suite = etm.Suite(0, bytes(32))\ndata = p.unhexlify('{KIB}')\nhdr = bytes(16)\n",
                    "c.seal(suite, b'12345678', hdr, data)"),
    # The tunnel with the null cipher bound (HMAC only), so its figure is the
    # tunnel's own work plus the MAC every cipher adds; the peer lives in the
    # same process and is subtracted from the heap.
    "udp-tunnel": ("capdev.shards.vpn.udp_tunnel", "kib",
                   "tunnel = sys.modules['capdev.shards.vpn.tunnel']\npsk = bytes(32)\ninst.attach(psk, 'initiator', peer=('127.0.0.1', 9))\n"
                   "nc = null_cipher.Shard('n'); nc.start()\ninst.set_cipher(nc)\n"
                   "gc.collect(); before_peer = p.heap_used()\n"
                   "peer = tunnel.Endpoint('responder', psk)\n"
                   "gc.collect(); extra = p.heap_used() - before_peer\n"
                   "inst.ep.receive(peer.receive(inst.ep.connect())[1])\n"
                   f"data = p.unhexlify('{KIB}')[:1024 - 32]\n",
                   "peer.receive(inst.ep.send(data))"),
    "local-auth": ("capdev.shards.vpn.local_auth", "op",
                   "inst.add_user('alice', 'wonderland')\n", "inst.verify('alice', 'wonderland')"),
    "radius-auth": ("capdev.shards.vpn.radius_auth", "op",
                    "from capdev.shards.vpn import radius\nra = bytes(16)\n"
                    "req = radius.access_request(7, b'secret', ra, b'alice', b'wonderland', b'nas')\n"
                    "body = bytes((80, 18)) + bytes(16)\n"
                    "head = bytes((2, 7)) + (20 + len(body)).to_bytes(2, 'big')\n"
                    "mac = radius.hmac_md5(b'secret', head + ra + body)\n"
                    "body = bytes((80, 18)) + mac\n"
                    "resp = head + radius._md5(head + ra + body + b'secret') + body\n",
                    "radius.access_request(7, b'secret', ra, b'alice', b'wonderland', b'nas'); "
                    "radius.check_response(resp, b'secret', ra, 7)"),
    "dscp-marker": ("capdev.shards.shaping.dscp_marker", "op",
                    "pkt = bytearray(b'\\x45' + bytes(19) + bytes(80))\n", "inst.mark(pkt, 'telephony')"),
    "token-bucket": ("capdev.shards.shaping.token_bucket", "op",
                     "pkt = bytes(100)\n", "inst.enqueue(pkt); inst.dequeue()"),
    "strict-priority": ("capdev.shards.shaping.strict_priority", "op",
                        "pkt = bytes(100)\n", "inst.enqueue('telephony', pkt); inst.dequeue()"),
}
REF = {"kib": REF_KIB_PER_S, "op": REF_PACKETS_PER_S}
AUTH = ("local-auth", "radius-auth")

TEMPLATE = """
import gc, json, sys
from capdev import platform as p
PRE
gc.collect()
base = p.heap_used()
__import__(NAME)
mod = sys.modules[NAME]
gc.collect()
loaded = p.heap_used() - base
inst = mod.Shard(SID)
inst.configure({'cpu': 10, 'slice_ms': 2, 'mem_kb': 64, 'bw_kbps': 100000, 'prio': 'medium', 'slot': 's'})
inst.start()
extra = 0
SETUP
for _ in range(3):
    OP
n = 0
t0 = p.ticks_ms()
while p.ticks_diff(p.ticks_ms(), t0) < RUN_MS:
    OP
    n += 1
elapsed = p.ticks_diff(p.ticks_ms(), t0)
gc.collect()
running = p.heap_used() - base - extra
print(json.dumps({'load_b': loaded, 'run_b': running, 'n': n, 'ms': elapsed}))
"""


def measure(sid):
    module, unit, setup, op = SHARDS[sid]
    # Helpers the measurement needs but the shard does not hold (the tunnel's
    # adapter for the null cipher, the null cipher the tunnel is bound to)
    # are imported before the baseline so they are not charged to the shard.
    pre = {"null-cipher": "from capdev.shards.vpn import tunnel, etm",
           "udp-tunnel": "from capdev.shards import null_cipher"}.get(sid, "")
    code = (TEMPLATE.replace("PRE", pre).replace("NAME", repr(module)).replace("SID", repr(sid)).replace("SETUP", setup)
            .replace("OP", op).replace("RUN_MS", str(RUN_MS)))
    argv, env = fwrun.command("micropython", ["-c", code], heap_kb=HEAP_KB, compiled=True)
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"{sid}: benchmark failed:\n{p.stdout}\n{p.stderr}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    ms_per = r["ms"] / r["n"]
    ref = REF_LOGINS_PER_S if sid in AUTH else REF[unit]
    cpu = max(1, min(100, math.ceil(ms_per * ref / 10)))  # ms per s / 1000 ms * 100 %
    return {"id": sid, "module": module, "unit": unit, "load_kb": round(r["load_b"] / 1024, 1),
            "run_kb": round(r["run_b"] / 1024, 1), "ms_per_unit": round(ms_per, 4),
            "per_s": round(1000 / ms_per, 1), "cpu": cpu,
            "mem_kb": math.ceil(max(r["load_b"], r["run_b"]) / 1024)}


def write_catalog(results, path=CATALOG):
    """Rewrite only the cost and module lines of the measured [[shard]] entries."""
    with open(path) as f:
        text = f.read()
    blocks = re.split(r"(?m)^(?=\[\[shard\]\])", text)
    changed = 0
    for i, block in enumerate(blocks):
        m = re.search(r'(?m)^id = "([^"]+)"', block)
        if not block.startswith("[[shard]]") or not m or m.group(1) not in results:
            continue
        r = results[m.group(1)]
        cost = re.search(r"(?m)^cost = \{([^}]*)\}", block)
        bw = re.search(r"bw_kbps = (\d+)", cost.group(1)).group(1)
        new = f'cost = {{ cpu = {r["cpu"]}, mem_kb = {r["mem_kb"]}, bw_kbps = {bw} }}'
        block = block[:cost.start()] + new + block[cost.end():]
        block = re.sub(r'(?m)^module = "[^"]*"', f'module = "{r["module"]}"', block, count=1)
        blocks[i] = block
        changed += 1
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(blocks))
    os.replace(tmp, path)
    return changed


def main(argv):
    only = argv or list(SHARDS)
    results = {}
    for sid in only:
        r = measure(sid)
        results[sid] = r
        print(f"{sid:16} load {r['load_kb']:6.1f} KiB  run {r['run_kb']:6.1f} KiB  "
              f"{r['ms_per_unit']:9.4f} ms/{r['unit']}  ({r['per_s']:.0f}/s)  -> cpu {r['cpu']} mem_kb {r['mem_kb']}")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    if not argv:
        n = write_catalog(results)
        print(f"catalog: {n} shard entries updated in {os.path.relpath(CATALOG, REPO_ROOT)}")
    aes = results.get("aes128-ctr", {}).get("per_s", 0)
    heap = max(r["run_kb"] if r["run_kb"] > r["load_kb"] else r["load_kb"] for r in results.values())
    print(f"shards: measured={len(results)} max_heap_kb={heap:.1f} aes128_kib_per_s={aes:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
