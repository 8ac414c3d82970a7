"""`capshard demo`: a small fleet on this machine, the whole idea in a minute.

A private mosquitto, the provider service with the Dynamic Shard Allocator,
and devices running the real firmware (one under MicroPython), fed synthetic
traffic through scenarios: a game, a video call, a 4K stream, banking,
congestion that forces preemption, and a shard that crashes and fails over.
It checks every scenario's outcome, prints a summary and draws a PNG chart."""

import os
import shutil
import tempfile
import time

from ..demo import chart, scenarios
from ..demo.runner import DemoRun


def register(sub):
    p = sub.add_parser("demo", help="run the end-to-end demo on this machine")
    p.add_argument("--chart", default="capshard-demo.png", help="where to write the PNG chart")
    p.add_argument("--keep", action="store_true", help="keep the working directory (device logs)")
    p.set_defaults(func=run)


def _say(text):
    print(f"[demo {time.strftime('%H:%M:%S')}] {text}", flush=True)


def run(args):
    workdir = tempfile.mkdtemp(prefix="capshard-demo-")
    started = time.time()
    demo = DemoRun(workdir, scenarios.DEVICES, scenarios.STEPS, say=_say)
    try:
        ok = demo.run()
    finally:
        if args.keep:
            _say(f"working directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    _summary(demo, time.time() - started)
    path = chart.draw(demo.timeline, args.chart)
    if path:
        _say(f"chart of allocations over time: {os.path.abspath(path)}")
    passed = sum(r.passed for r in demo.results)
    _say(f"{'OK' if ok else 'FAILED'}: {passed} of {len(demo.results)} scenarios produced the expected allocation")
    return 0 if ok else 1


def _summary(demo, seconds):
    print()
    print(f"{'#':>2}  {'scenario':<58} {'device':<14} {'result':<7} {'took':>6}")
    for i, r in enumerate(demo.results, 1):
        print(f"{i:>2}  {r.title:<58} {r.device_id:<14} {'ok' if r.passed else 'FAILED':<7} {r.seconds:>5.1f}s")
        if not r.passed:
            print(f"      {r.detail}")
    print()
    if demo.service is not None:
        fleet = demo.service.fleet
        print(f"{'device':<14} {'tier':<9} {'needs':<44} shards")
        for dev in demo.devices:
            rec = fleet.device(dev.device_id)
            if rec is None:
                continue
            needs = ", ".join(sorted((rec.needs or {}).get("classes", {}))) or "-"
            print(f"{dev.device_id:<14} {rec.tier or '-':<9} {needs:<44} {', '.join(sorted(rec.reported))}")
    print(f"\ndemo ran for {seconds:.0f} s")
    print()
