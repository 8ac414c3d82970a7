"""Device footprint: the full agent under MicroPython, run from .mpy as a board
runs it, with three shards active and steady synthetic traffic.

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
                   a trial passes

Last line: device: heap_steady_kb=A heap_peak_kb=B min_heapsize_kb=C
Options: --heap N runs one trial at N KiB and prints its outcome.
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

from capshard import localdev, wire  # noqa: E402
from capshard.broker import Mosquitto  # noqa: E402
from capshard.keys import Keystore  # noqa: E402
from capshard.service.policy import MINIMAL_BASELINE  # noqa: E402
from capshard.service.provider import ProviderService  # noqa: E402

# The live heap after a collection does not depend on the cap as long as the
# agent fits; the steady run uses a cap it fits in with room, so the figure
# is not disturbed by a collector working at its limit.
STEADY_HEAP_KB = 256
SEARCH = (48, 320, 8)
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

    def __init__(self, bench, heap_kb, tag):
        self.bench = bench
        self.heap_kb = heap_kb
        self.device_id = f"bench-{tag}-{heap_kb}k"
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
        self.proc = localdev.spawn_agent("micropython", self.dir, heap_kb=self.heap_kb)
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
        self.broker.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def trial(self, heap_kb, tag="t"):
        t = Trial(self, heap_kb, tag).start()
        try:
            ok = t.cycle()
        finally:
            t.stop()
        return ok, t

    def steady(self, result):
        """Run at STEADY_HEAP_KB until the first periodic health message."""
        t = Trial(self, STEADY_HEAP_KB, "steady").start()
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

    def search(self):
        """Smallest heap (KiB) on the SEARCH grid where a trial passes."""
        lo_kb, hi_kb, step = SEARCH
        lo, hi = 0, (hi_kb - lo_kb) // step  # grid indices; hi must pass
        ok, t = self.trial(hi_kb, "max")
        print(f"  trial {hi_kb:3d} KiB: {'pass' if ok else 'FAIL: ' + t.failure}", flush=True)
        if not ok:
            return None
        ok, t = self.trial(lo_kb, "min")
        print(f"  trial {lo_kb:3d} KiB: {'pass' if ok else 'fail: ' + t.failure}", flush=True)
        if ok:
            return lo_kb
        while hi - lo > 1:
            mid = (lo + hi) // 2
            kb = lo_kb + mid * step
            ok, t = self.trial(kb, "s")
            print(f"  trial {kb:3d} KiB: {'pass' if ok else 'fail: ' + t.failure}", flush=True)
            if ok:
                hi = mid
            else:
                lo = mid
        return lo_kb + hi * step


def kib(n):
    return None if n is None else round(n / 1024, 1)


def main():
    logging.getLogger("capshard.service").setLevel(logging.ERROR)  # trials report refusals themselves
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--heap", type=int, help="run one trial at this heap size (KiB) and stop")
    args = ap.parse_args()
    t0 = time.monotonic()
    with Bench() as bench:
        if args.heap:
            ok, t = bench.trial(args.heap)
            print(f"trial {args.heap} KiB: {'pass' if ok else 'FAIL: ' + t.failure}")
            health = bench.tap.of(t.device_id)
            if health:
                h = health[-1][1]
                print(f"last health: heap_used={kib(h.get('heap_used'))} KiB "
                      f"heap_peak={kib(h.get('heap_peak'))} KiB heap_free={kib(h.get('heap_free'))} KiB")
            print(localdev.read_log(t.proc)[-1500:])
            return 0 if ok else 1
        print(f"device footprint: MicroPython unix port ({localdev.fwrun.micropython_binary()}), "
              f"agent from .mpy, shards {', '.join(op['shard'] for op in SHARDS)}, "
              f"traffic {'+'.join(TRAFFIC['kinds'])}", flush=True)
        steady = {}
        runner = threading.Thread(target=bench.steady, args=(steady,))
        runner.start()  # mostly waiting for the periodic health: overlap it with the search
        print(f"min heapsize search over {SEARCH[0]}..{SEARCH[1]} KiB, step {SEARCH[2]}:", flush=True)
        min_kb = bench.search()
        runner.join()
    h = steady.get("health") or {}
    if steady.get("error"):
        print(f"steady run at {STEADY_HEAP_KB} KiB: {steady['error']}")
        print(steady.get("log_tail", ""))
    used, peak, free = h.get("heap_used"), h.get("heap_peak"), h.get("heap_free")
    print(f"steady run at {STEADY_HEAP_KB} KiB: heap_used {used} B, heap_peak {peak} B, heap_free {free} B")
    print(f"elapsed {time.monotonic() - t0:.0f} s")
    ok = used is not None and min_kb is not None and not steady.get("error")
    print(f"device: heap_steady_kb={kib(used)} heap_peak_kb={kib(peak)} min_heapsize_kb={min_kb}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
