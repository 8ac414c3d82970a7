"""Reaction time: from a QoS report leaving a device to the ack of the
instruction it caused arriving at the provider, over a private mosquitto, at
1, 100 and 1000 devices.

The provider is the real ProviderService (in this process) with the
allocator policy (AllocatorPolicy over the shipped catalog and tiers) and a
SQLite fleet store on disk, so each report is decoded, stored, planned,
written, signed and published. The coalescing delay for reports is set to 0
(``replan_delay_s``; the shipped default, 0.1 s, would add 100 ms to every
figure on purpose) and the rate limiter is opened wide.

Devices: ``simdevices.py`` (a separate process) runs the lightweight
protocol clients, each on its own MQTT connection: birth, verify the
COSE_Mac0 instruction with its key, apply, ack, state. Each client sends a
report every ``PERIOD`` s (random phase) whose needs alternate, so every
report changes the plan. One more device is the full firmware agent (CPython,
``capshard.localdev``) with synthetic traffic switched between a game and a
video stream; its reports are timed from when the broker delivered them to
an observer.

A sample is ack time (as the provider recorded it, ``acked_at``) minus the
report's send time (the device's wall clock; same machine).
Last line: ``e2e: devices=1000 p50_ms=A p99_ms=B``.

``--smoke`` runs the same steps at 1 and 10 devices for a few seconds: a
check that the bench works end to end (tests/tools/test_benches.py), not a
figure. ``--store-io`` adds, per stage, what the fleet store wrote for each
report: SQL statements by kind, transactions, and bytes this process sent
to the disk (Linux ``/proc/self/io``, after a sync; the WAL and the
checkpoints' copies into the database).
"""

import collections
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "host"))

import paho.mqtt.client as mqtt  # noqa: E402

from capshard import localdev, wire  # noqa: E402
from capshard.broker import Mosquitto  # noqa: E402
from capshard.demo.scenarios import DEVICE_MODULES  # noqa: E402
from capshard.keys import Keystore  # noqa: E402
from capshard.service.fleet import Fleet  # noqa: E402
from capshard.service.policy import AllocatorPolicy  # noqa: E402
from capshard.service.provider import ProviderService  # noqa: E402
from capshard.service.reconcile import ReconcileOptions  # noqa: E402
from capshard.service.store import open_store  # noqa: E402

SCALES = ((1, 0.05, 8.0), (100, 1.0, 15.0), (1000, 5.0, 25.0))  # devices, report period s, seconds
AGENT = "agent-1"
STORE_IO = "--store-io" in sys.argv[1:]


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else float("nan")


def bench_options():
    return ReconcileOptions(replan_delay_s=0.0, rate_per_s=1e6, burst=10 ** 6, tick_s=0.05)


def start_provider(broker, keystore, store_url, **kw):
    fleet = Fleet(open_store(store_url))
    svc = ProviderService(broker.host, broker.port, keystore, fleet=fleet, policy=AllocatorPolicy.from_files(),
                          options=bench_options(), client_id=kw.pop("client_id", "bench-provider"), **kw)
    return svc.start()


def run_sim(broker, keys_path, prefix, n, mode, seconds, period=1.0):
    """Start simdevices.py; returns (process, go) once every device is synced."""
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "simdevices.py"), broker.host, str(broker.port),
                             keys_path, prefix, str(n), mode, str(seconds), "--period", str(period)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("simulated devices did not come up")
    return proc


def finish_sim(proc):
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out = json.loads(proc.stdout.readline())
    proc.wait(30)
    return out


class StoreIO:
    """--store-io: counts the statements the SQLite store runs (its trace
    hook) and the bytes this process writes to the disk, stage by stage."""

    def __init__(self, store):
        self.statements = collections.Counter()
        self.disk0 = 0
        store.backend.conn.set_trace_callback(self._trace)

    def _trace(self, sql):
        self.statements[" ".join(sql.split()[:3])] += 1

    @staticmethod
    def _disk_bytes():
        os.sync()
        with open("/proc/self/io") as f:
            return int(next(line for line in f if line.startswith("write_bytes:")).split()[1])

    def start(self):
        self.statements.clear()
        self.disk0 = self._disk_bytes()

    def report(self, reports):
        n = max(1, reports)
        written = self._disk_bytes() - self.disk0
        print(f"    store: {self.statements['COMMIT'] / n:.1f} transactions and "
              f"{written / 1024 / n:.1f} KiB written to disk per report")
        for statement, count in self.statements.most_common(12):
            print(f"    {count / n:6.2f}/report  {statement}")


def acked_times(store, ids):
    found = {}
    for row in store.instructions():
        if row["id"] in ids and row["acked_at"] is not None:
            found[row["id"]] = row["acked_at"]
    return found


class AgentWatcher:
    """Times the full agent's reports: broker delivery of each qos message,
    then the ack of the first instruction created after it."""

    def __init__(self, broker):
        self.arrivals = []
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-observer")
        self.c.on_message = lambda c, u, m: self.arrivals.append(time.time())
        self.c.connect(broker.host, broker.port)
        self.c.subscribe(wire.topic(AGENT, "qos"), qos=1)
        self.c.loop_start()

    def samples(self, store):
        rows = [r for r in store.instructions(AGENT) if not r["full_state"] and r["acked_at"]]
        out = []
        for t in self.arrivals:
            after = [r for r in rows if r["created_at"] >= t]
            if after and after[0]["created_at"] - t < 1.0:
                out.append(after[0]["acked_at"] - t)
        return out

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


def toggle_traffic(directory, stop):
    kinds = (["game"], ["video"])
    i = 0
    while not stop.is_set():
        path = os.path.join(directory, "traffic.json")
        with open(path + ".tmp", "w") as f:
            json.dump({"kinds": kinds[i % 2]}, f)
        os.replace(path + ".tmp", path)
        i += 1
        stop.wait(3.0)


def main():
    logging.basicConfig(level=logging.ERROR)
    work = tempfile.mkdtemp(prefix="capshard-e2e-")
    broker = Mosquitto(extra_config="set_tcp_nodelay true").start()
    keystore = Keystore()
    for n, _, _ in SCALES:
        for i in range(n):
            keystore.provision(f"s{n}-{i:04d}")
    keys_path = os.path.join(work, "keys.json")
    store_url = os.path.join(work, "fleet.sqlite")
    agent = watcher = None
    stop = threading.Event()
    svc = None
    lines = []
    started = time.monotonic()
    try:
        adir = localdev.provision_dir(os.path.join(work, AGENT), keystore, AGENT, broker.host, broker.port,
                                      board_overrides={"traffic_sources": ["synthetic"], "shards": DEVICE_MODULES,
                                                       "capacities": {"cpu": 100, "mem_kb": 300, "bw_kbps": 20000},
                                                       "rnma": {"report_min_interval_ms": 1000, "hold_ms": 1500}})
        keystore.save(keys_path)
        svc = start_provider(broker, keystore, store_url)
        watcher = AgentWatcher(broker)
        threading.Thread(target=toggle_traffic, args=(adir, stop), daemon=True).start()
        agent = localdev.spawn_agent("cpython", adir)
        store_io = StoreIO(svc.store) if STORE_IO else None
        for n, period, seconds in SCALES:
            proc = run_sim(broker, keys_path, f"s{n}-", n, "e2e", seconds, period)
            if store_io:
                store_io.start()
            out = finish_sim(proc)
            ids = {inst_id for _, inst_id in out["samples"]}
            acked = acked_times(svc.store, ids)
            lat = [(acked[i] - sent) * 1000 for sent, i in out["samples"] if i in acked]
            rate = len(out["samples"]) / max(1e-9, out["t1"] - out["t0"])
            line = (f"[{n} devices] {len(lat)} reports at {rate:.0f}/s (each device every {period:g} s): "
                    f"p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, max {max(lat):.1f} ms; "
                    f"lost {out['lost']}, bad MAC {out['bad_mac']}")
            print(line, flush=True)
            if store_io:
                store_io.report(len(out["samples"]))
            lines.append((n, pct(lat, 50), pct(lat, 99)))
        agent_lat = [x * 1000 for x in watcher.samples(svc.store)]
        if agent_lat:
            print(f"[full agent, CPython] {len(agent_lat)} reports: p50 {pct(agent_lat, 50):.1f} ms, "
                  f"max {max(agent_lat):.1f} ms (alongside the simulated devices)")
        else:
            print("[full agent, CPython] took part (birth, sync, acks); none of its reports changed the plan")
        print(f"elapsed {time.monotonic() - started:.0f} s")
    finally:
        stop.set()
        if agent is not None:
            localdev.stop(agent)
        if watcher is not None:
            watcher.stop()
        if svc is not None:
            svc.stop()
        broker.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    n, p50, p99 = lines[-1]
    print(f"e2e: devices={n} p50_ms={p50:.1f} p99_ms={p99:.1f}")


def smoke():
    """--smoke: the same steps at tiny scales, to check the bench works end to
    end (tests/tools/test_benches.py); the figures mean nothing."""
    global SCALES
    SCALES = ((1, 0.05, 2.0), (10, 0.5, 3.0))


if __name__ == "__main__":
    if "--smoke" in sys.argv[1:]:
        smoke()
    main()
