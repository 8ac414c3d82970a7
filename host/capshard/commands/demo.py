"""`capshard demo`: a private broker, the provider service and two devices
running the real firmware (one under MicroPython, one under CPython), doing a
signed instruction round trip; then a readable summary."""

import os
import shutil
import tempfile
import time

from .. import localdev
from ..broker import Mosquitto
from ..keys import Keystore
from ..service.policy import minimal_baseline
from ..service.provider import ProviderService

DEVICES = (("gw-esp32-sim", "micropython"), ("router-openwrt", "cpython"))


def register(sub):
    p = sub.add_parser("demo", help="run the end-to-end demo on this machine")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for convergence")
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    p.set_defaults(func=run)


def _say(text):
    print(f"[demo {time.strftime('%H:%M:%S')}] {text}", flush=True)


def run(args):
    workdir = tempfile.mkdtemp(prefix="capshard-demo-")
    procs = []
    ok = False
    try:
        with Mosquitto(workdir=os.path.join(workdir, "broker")) as broker:
            _say(f"mosquitto listening on {broker.host}:{broker.port}")
            keystore = Keystore()
            with ProviderService(broker.host, broker.port, keystore,
                                 minimal_baseline) as service:
                _say("provider service connected")
                for device_id, runtime in DEVICES:
                    d = localdev.provision_dir(os.path.join(workdir, device_id), keystore,
                                               device_id, broker.host, broker.port)
                    procs.append((device_id, runtime, localdev.spawn_agent(runtime, d, heap_kb=256)))
                    _say(f"device {device_id} started under {runtime}")
                ok = service.fleet.wait_until(
                    lambda f: all(_converged(f, d) for d, _ in DEVICES), args.timeout)
                _summary(service.fleet, procs)
    finally:
        for _, _, p in procs:
            localdev.stop(p)
        if args.keep:
            _say(f"working directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if not ok:
        _say("FAILED: not every device converged to its desired profile")
        return 1
    _say("OK: every device runs its desired profile")
    return 0


def _converged(fleet, device_id):
    rec = fleet.devices.get(device_id)
    return bool(rec and rec.online and rec.reported and rec.reported == rec.desired)


def _summary(fleet, procs):
    print()
    print(f"{'device':<16} {'runtime':<12} {'heap used':>10} {'desired':<14} {'reported':<14} instructions")
    for device_id, runtime, _ in procs:
        rec = fleet.devices.get(device_id)
        if rec is None:
            print(f"{device_id:<16} {runtime:<12} {'-':>10} {'(never joined)'}")
            continue
        heap = (rec.birth or {}).get("heap_used")
        heap = f"{heap / 1024:.1f} KiB" if heap else "n/a"
        states = [i.state for i in fleet.instructions.values() if i.device_id == device_id]
        print(f"{device_id:<16} {runtime:<12} {heap:>10} {','.join(rec.desired) or '-':<14} "
              f"{','.join(rec.reported) or '-':<14} {' '.join(states)}")
    print()
    for t, device_id, text in fleet.events:
        print(f"  {time.strftime('%H:%M:%S', time.localtime(t))} {device_id:<16} {text}")
    for _, text in fleet.errors:
        print(f"  error: {text}")
    print()
