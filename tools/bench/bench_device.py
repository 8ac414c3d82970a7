"""Device footprint: the full agent under MicroPython, deployed two ways, with
three shards active and steady synthetic traffic:

  mpy    the compiled .mpy files on a filesystem: importing copies each
         module's bytecode into the RAM heap (the baseline)
  romfs  the same .mpy files in a ROMFS image (capshard.build.build_romfs),
         mounted at /rom by romboot: bytecode executes in place, as on a board
         with a ROMFS flash partition. The unix port has no flash, so
         capshard.romexec maps the image file read-only outside the GC heap;
         where that launcher is unavailable the image is read into the heap
         and its size is subtracted from the romfs figures (said so in the
         output)

A private mosquitto and a provider (static policy: null-cipher, counter,
loop-lag) serve each device. A trial passes when, within a heap of N KiB, the
agent completes a full instruction cycle -- birth, the provider's instruction,
ack applied, state reported -- its monitor sends a QoS report from the traffic,
a second instruction (an adjust sent while video and game traffic play) is
applied and acked, and it then keeps running a few seconds more with no
MemoryError and no monitoring failure in its log.

Figures:
  heap_steady_kb   heap in use after a collection (gc.mem_alloc), from the
                   device's periodic health message about 30 s after start,
                   traffic playing (STEADY_HEAP_KB cap)
  heap_peak_kb     the highest such after-collection figure the agent sampled
                   (every second, after each instruction and each traffic tick);
                   micropython.mem_peak() is not used: it counts every
                   allocation ever made since the GC frees without m_free
  min_heapsize_kb  smallest -X heapsize (binary search, 48..320 step 8) where
                   a trial passes, and then CONFIRM_TRIALS more in a row (else
                   the next step up is tried the same way): a heap that only
                   works now and then does not count

Both deployments are measured in one run (in parallel, one agent per trial).
Line before last: the mpy baseline and the romfs/mpy ratios.
Last line (the romfs deployment, what a board runs):
  device: heap_steady_kb=A heap_peak_kb=B min_heapsize_kb=C
Options: --heap N runs one trial at N KiB and prints its outcome
(--code mpy|romfs picks the deployment, default romfs); --smoke runs the
whole bench on a coarse grid, to check that it works.
"""

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "host"))

import cbor2  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

from capshard import build, localdev, wire  # noqa: E402
from capshard.broker import Mosquitto  # noqa: E402
from capshard.keys import Keystore  # noqa: E402
from capshard.service.policy import MINIMAL_BASELINE  # noqa: E402
from capshard.service.provider import ProviderService  # noqa: E402

# The live heap after a collection does not depend on the cap as long as the
# agent fits; the steady run uses a cap it fits in with room, so the figure
# is not disturbed by a collector working at its limit.
STEADY_HEAP_KB = 256
CODES = ("mpy", "romfs")  # deployments measured; the last line reports romfs
SEARCH = (48, 320, 8)
CONFIRM_TRIALS = 2   # more passes in a row the smallest heap found must give
TRAFFIC = {"kinds": ["game", "video"]}
SHARDS = [
    dict(MINIMAL_BASELINE[0]),
    {"op": "activate", "shard": "counter", "ver": "1.0.0", "slot": "util.counter",
     "module": "capdev.shards.counter", "cpu": 10, "mem_kb": 4, "bw_kbps": 0,
     "prio": "medium", "dur_s": 0, "alt": None},
    {"op": "activate", "shard": "loop-lag", "ver": "1.0.0", "slot": "util.loop_lag",
     "module": "capdev.shards.loop_lag", "cpu": 5, "mem_kb": 4, "bw_kbps": 0,
     "prio": "low", "dur_s": 0, "alt": None},
]
BOARD = {
    "shards": sorted(op["module"] for op in SHARDS),
    # Reports as soon as needs change, so a trial sees one within seconds.
    "rnma": {"report_min_interval_ms": 2000, "hold_ms": 4000},
}
BAD_LOG = ("MemoryError", "traffic monitoring failed", "Traceback")


def desired(device_id, birth):
    return [dict(op) for op in SHARDS]


class HealthTap:
    """Every health message the devices publish, decoded, with arrival time."""

    def __init__(self, broker):
        self.seen = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-health-tap")
        self.client.on_connect = lambda c, *a: c.subscribe(wire.PREFIX + "+/health", qos=1)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message):
        device_id = message.topic.split("/")[-2]
        with self._lock:
            self.seen.setdefault(device_id, []).append((time.monotonic(), cbor2.loads(message.payload)))

    def of(self, device_id):
        with self._lock:
            return list(self.seen.get(device_id, ()))

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def _succeeded(fleet, device_id):
    return sum(1 for i in fleet.instructions_of(device_id) if i.state == "SUCCEEDED")


def _converged(fleet, device_id, version):
    rec = fleet.device(device_id)
    return bool(rec and rec.online and rec.desired_version >= version and rec.reported
                and rec.converged)


class Trial:
    """One agent process at one heap size, driven through the cycle."""

    def __init__(self, bench, heap_kb, tag, code):
        self.bench = bench
        self.heap_kb = heap_kb
        self.code = code
        self.device_id = f"bench-{code}-{tag}-{heap_kb}k"
        self.dir = os.path.join(bench.workdir, self.device_id)
        self.proc = None
        self.failure = None
        self.started = None

    def start(self):
        b = self.bench
        localdev.provision_dir(self.dir, b.keystore, self.device_id, b.broker.host, b.broker.port,
                               board_overrides=BOARD)
        with open(os.path.join(self.dir, "traffic.json"), "w") as f:
            json.dump(TRAFFIC, f)
        self.started = time.monotonic()
        self.proc = localdev.spawn_agent("micropython", self.dir, heap_kb=self.heap_kb, code=self.code)
        return self

    def _fail(self, why):
        self.failure = why
        return False

    def _log_problem(self):
        text = localdev.read_log(self.proc)
        for bad in BAD_LOG:
            if bad in text:
                line = next(ln for ln in text.splitlines() if bad in ln)
                return line.strip()[:200]
        if self.proc.poll() is not None:
            return f"agent exited with code {self.proc.returncode}"
        return None

    def _refused(self):
        """Why the device did not apply an instruction (e.g. its heap floor), or None."""
        for i in self.bench.service.fleet.instructions_of(self.device_id):
            if i.state in ("FAILED", "REJECTED") and i.ack:
                bad = [r for r in i.ack.get("results") or [] if r.get("code") != "activated"]
                return (bad[0].get("reason") if bad else i.ack.get("reason")) or i.state
        return None

    def _wait(self, predicate, timeout, what):
        fleet = self.bench.service.fleet
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            problem = self._log_problem() or self._refused()
            if problem:
                return self._fail(f"{what}: {problem}")
            if fleet.wait_until(predicate, 0.5):
                return True
        return self._fail(f"{what}: not within {timeout} s")

    def cycle(self, settle_s=4.0):
        """True when the whole cycle passes (``failure`` says why not)."""
        svc = self.bench.service
        dev = self.device_id
        if not self._wait(lambda f: _converged(f, dev, 1) and _succeeded(f, dev) >= 1, 30,
                          "first instruction cycle"):
            return False
        if not self._wait(lambda f: (f.device(dev).needs or {}).get("classes"), 20, "QoS report"):
            return False
        # A second cycle while traffic plays: the counter's CPU weight changes.
        ops = desired(dev, None)
        ops[1]["cpu"] = 20
        version = svc.set_desired(dev, ops, why="bench: adjust under traffic")
        if not self._wait(lambda f: _converged(f, dev, version) and _succeeded(f, dev) >= 2, 30,
                          "instruction under traffic"):
            return False
        end = time.monotonic() + settle_s
        while time.monotonic() < end:
            problem = self._log_problem()
            if problem:
                return self._fail("after the cycle: " + problem)
            time.sleep(0.25)
        return True

    def stop(self):
        if self.proc is not None:
            localdev.stop(self.proc)


class Bench:
    def __init__(self):
        self.workdir = tempfile.mkdtemp(prefix="capshard-bench-device-")
        self.broker = Mosquitto()
        self.keystore = Keystore()
        self.service = None
        self.tap = None

    def __enter__(self):
        self.broker.start()
        self.service = ProviderService(self.broker.host, self.broker.port, self.keystore, desired).start()
        self.tap = HealthTap(self.broker)
        return self

    def __exit__(self, *exc):
        self.tap.close()
        self.service.stop()
        self.broker.cleanup()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def trial(self, heap_kb, code, tag="t"):
        t = Trial(self, heap_kb, tag, code).start()
        try:
            ok = t.cycle()
        finally:
            t.stop()
        return ok, t

    def steady(self, code, result):
        """Run at STEADY_HEAP_KB until the first periodic health message."""
        t = Trial(self, STEADY_HEAP_KB, "steady", code).start()
        try:
            if not t.cycle(settle_s=0):
                result["error"] = t.failure
                return
            deadline = t.started + 45
            while time.monotonic() < deadline:
                late = [h for at, h in self.tap.of(t.device_id) if at - t.started >= 25 and not h.get("events")]
                if late:
                    result["health"] = late[0]
                    result["problem"] = t._log_problem()
                    return
                if t._log_problem():
                    break
                time.sleep(0.5)
            result["error"] = "no periodic health message: " + str(t._log_problem())
            result["health"] = (self.tap.of(t.device_id) or [(0, None)])[-1][1]
        finally:
            t.stop()
            result["log_tail"] = localdev.read_log(t.proc)[-600:]

    def search(self, code):
        """Smallest heap (KiB) on the SEARCH grid where a trial passes."""
        lo_kb, hi_kb, step = SEARCH
        lo, hi = 0, (hi_kb - lo_kb) // step  # grid indices; hi must pass
        ok, t = self.trial(hi_kb, code, "max")
        print(f"  [{code}] trial {hi_kb:3d} KiB: {'pass' if ok else 'FAIL: ' + t.failure}", flush=True)
        if not ok:
            return None
        ok, t = self.trial(lo_kb, code, "min")
        print(f"  [{code}] trial {lo_kb:3d} KiB: {'pass' if ok else 'fail: ' + t.failure}", flush=True)
        if ok:
            return lo_kb
        while hi - lo > 1:
            mid = (lo + hi) // 2
            kb = lo_kb + mid * step
            ok, t = self.trial(kb, code, "s")
            print(f"  [{code}] trial {kb:3d} KiB: {'pass' if ok else 'fail: ' + t.failure}", flush=True)
            if ok:
                hi = mid
            else:
                lo = mid
        return self.confirm(code, lo_kb + hi * step, hi_kb, step)

    def confirm(self, code, kb, hi_kb, step):
        """``kb`` once more CONFIRM_TRIALS times (fresh devices): a heap in
        which the agent fails now and then (a fragmented heap refusing one
        allocation) does not count. On a failure, the next step up."""
        while kb < hi_kb:
            for n in range(CONFIRM_TRIALS):
                ok, t = self.trial(kb, code, f"c{n}")
                print(f"  [{code}] trial {kb:3d} KiB again: {'pass' if ok else 'fail: ' + t.failure}", flush=True)
                if not ok:
                    break
            else:
                return kb
            kb += step
        return kb


def kib(n):
    return None if n is None else round(n / 1024, 1)


def measure(bench, code, out):
    """Steady run and heap search for one deployment, the two overlapped."""
    steady = {}
    runner = threading.Thread(target=bench.steady, args=(code, steady))
    runner.start()  # mostly waiting for the periodic health: overlap it with the search
    out["min_kb"] = bench.search(code)
    runner.join()
    out["steady"] = steady


def figures(result, code):
    """(used, peak, free, min_kb, ok) of one deployment, with its steady-run lines printed."""
    steady = result.get("steady") or {}
    h = steady.get("health") or {}
    if steady.get("error"):
        print(f"[{code}] steady run at {STEADY_HEAP_KB} KiB: {steady['error']}")
        print(steady.get("log_tail", ""))
    used, peak, free = h.get("heap_used"), h.get("heap_peak"), h.get("heap_free")
    print(f"[{code}] steady run at {STEADY_HEAP_KB} KiB: heap_used {used} B, heap_peak {peak} B, "
          f"heap_free {free} B; min heapsize {result.get('min_kb')} KiB")
    ok = used is not None and result.get("min_kb") is not None and not steady.get("error")
    return used, peak, free, result.get("min_kb"), ok


def ratio(a, b):
    return "n/a" if a is None or not b else f"{a / b:.2f}"


def main():
    logging.getLogger("capshard.service").setLevel(logging.ERROR)  # trials report refusals themselves
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--heap", type=int, help="run one trial at this heap size (KiB) and stop")
    ap.add_argument("--code", choices=CODES, default="romfs", help="deployment for --heap (default romfs)")
    ap.add_argument("--smoke", action="store_true",
                    help="a coarse search (160..256 KiB in 32 KiB steps, one confirming trial): a check that "
                         "the bench works end to end (tests/tools/test_benches.py), not a figure")
    args = ap.parse_args()
    if args.smoke:
        global SEARCH, CONFIRM_TRIALS
        SEARCH, CONFIRM_TRIALS = (160, 256, 32), 1
    t0 = time.monotonic()
    placement = localdev.fwrun.romfs_placement()
    image = build.build_romfs(build.DEFAULT_ROMFS)
    image_bytes = os.path.getsize(image)
    with Bench() as bench:
        if args.heap:
            ok, t = bench.trial(args.heap, args.code)
            print(f"trial {args.heap} KiB ({args.code}): {'pass' if ok else 'FAIL: ' + t.failure}")
            health = bench.tap.of(t.device_id)
            if health:
                h = health[-1][1]
                print(f"last health: heap_used={kib(h.get('heap_used'))} KiB "
                      f"heap_peak={kib(h.get('heap_peak'))} KiB heap_free={kib(h.get('heap_free'))} KiB")
            print(localdev.read_log(t.proc)[-1500:])
            return 0 if ok else 1
        print(f"device footprint: MicroPython unix port ({localdev.fwrun.micropython_binary()}), "
              f"shards {', '.join(op['shard'] for op in SHARDS)}, traffic {'+'.join(TRAFFIC['kinds'])}",
              flush=True)
        print(f"deployments: mpy (.mpy files, bytecode copied into the heap) and romfs "
              f"(ROMFS image {image_bytes} B = {kib(image_bytes)} KiB, bytecode in place, image "
              f"{'mapped read-only outside the GC heap' if placement == 'mapped' else 'read into the GC heap'})",
              flush=True)
        print(f"min heapsize search over {SEARCH[0]}..{SEARCH[1]} KiB, step {SEARCH[2]}, both deployments "
              "in parallel:", flush=True)
        results = {code: {} for code in CODES}
        threads = [threading.Thread(target=measure, args=(bench, code, results[code])) for code in CODES]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    m_used, m_peak, _, m_min, m_ok = figures(results["mpy"], "mpy")
    r_used, r_peak, _, r_min, r_ok = figures(results["romfs"], "romfs")
    if placement == "heap":
        # The image sat in the GC heap as one bytes object; a board keeps it in flash.
        img_kb = -(-image_bytes // 1024)
        r_used = None if r_used is None else r_used - image_bytes
        r_peak = None if r_peak is None else r_peak - image_bytes
        r_min = None if r_min is None else r_min - img_kb
        print(f"romfs figures corrected for the image in the heap: A = heap_used - {image_bytes} B, "
              f"B = heap_peak - {image_bytes} B, C = min heapsize - {img_kb} KiB (approximate: the "
              "collector's own tables grow with the cap)")
    else:
        print("romfs figures need no correction: the image was mapped outside the GC heap, so "
              "A = heap_used and B = heap_peak as the agent reported them (gc.mem_alloc after a "
              "collection), C = smallest passing -X heapsize")
    print(f"elapsed {time.monotonic() - t0:.0f} s")
    print(f"baseline mpy: heap_steady_kb={kib(m_used)} heap_peak_kb={kib(m_peak)} min_heapsize_kb={m_min} "
          f"(romfs/mpy: steady {ratio(r_used, m_used)}, peak {ratio(r_peak, m_peak)}, "
          f"min_heapsize {ratio(r_min, m_min)})")
    print(f"device: heap_steady_kb={kib(r_used)} heap_peak_kb={kib(r_peak)} min_heapsize_kb={r_min}")
    return 0 if (m_ok and r_ok) else 1


if __name__ == "__main__":
    sys.exit(main())
