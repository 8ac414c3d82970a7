"""Fleet throughput: QoS reports per second that provider processes turn into
instructions, against what mosquitto itself moves.

1. broker raw: one paho publisher and one paho subscriber, QoS 1, payloads
   the size of a QoS report (the message that starts each cycle), no
   provider: messages/s delivered.
2. one provider process (``capshard dsa run``, allocator policy, SQLite
   fleet store on disk) with enough simulated devices (``simdevices.py``,
   closed loop: the next report as soon as the instruction is acked) to keep
   it busy: reports/s turned into instructions (each one planned, stored,
   signed, published, acked by the device, its state recorded).
3. the same with 1, 2 and 4 provider processes on one PostgreSQL fleet
   store (a private server, started like the service tests do), sharing the
   device messages through an MQTT 5 shared subscription (``$share/dsa/...``)
   and the work through the store's compare-and-set claims: the speed-up
   over one process on PostgreSQL.

Every configuration also prints where the CPU went during its measured
window (providers, simulated devices, broker, database, whole machine) and
reports per provider-CPU-second: on a small machine all of them share the
cores, so that figure tells the provider's own cost from the machine's limit.

Last line: ``fleet: reports_per_s=R broker_raw_per_s=W ratio=X speedup_2=S2 speedup_4=S4``
(R from step 2, X = R / W).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(ROOT, "host"))
sys.path.insert(0, os.path.join(ROOT, "tests", "service"))

import cbor2  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

from capshard.broker import Mosquitto  # noqa: E402
from capshard.keys import Keystore  # noqa: E402

from simdevices import NEEDS, SECURITY  # noqa: E402

DEVICES = 400          # closed-loop devices: several in flight per provider at all times
SECONDS = 12.0         # measured window per configuration
RAW_MESSAGES = 30000
PROVIDER_OPTS = {"replan_delay_s": 0.0, "rate_per_s": 1000000, "burst": 1000000}


def broker_raw(broker, payload, count=RAW_MESSAGES):
    """Messages/s from one paho publisher to one paho subscriber, QoS 1."""
    got = [0]
    done = threading.Event()
    first = [None]

    def on_message(c, u, m):
        if first[0] is None:
            first[0] = time.perf_counter()
        got[0] += 1
        if got[0] >= count:
            done.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="raw-sub")
    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.subscribe("capshard/v1/dev/raw-0/qos", qos=1)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="raw-pub")
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    for _ in range(count):
        pub.publish("capshard/v1/dev/raw-0/qos", payload, qos=1)
    done.wait(120)
    dt = time.perf_counter() - t0
    for c in (pub, sub):
        c.loop_stop()
        c.disconnect()
    return got[0] / dt


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU seconds of one process so far (0 when gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def named_pids(name):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() == name:
                        out.append(int(d))
            except OSError:
                pass
    return out


def machine_busy():
    """(busy, total) CPU seconds of the whole machine so far."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v) - idle) / TICK, sum(v) / TICK


class CpuWindow:
    """CPU seconds per group of processes between start() and stop()."""

    def __init__(self, groups):
        self.groups = groups    # name -> function returning pids

    def _sample(self):
        return {name: {pid: cpu_seconds(pid) for pid in pids()} for name, pids in self.groups.items()}, \
            machine_busy(), time.monotonic()

    def start(self):
        self.a = self._sample()

    def stop(self):
        (a, (ab, at), t0), (b, (bb, bt), t1) = self.a, self._sample()
        self.wall = t1 - t0
        # processes that appeared meanwhile (database backends) count from 0
        self.used = {n: sum(v - a[n].get(pid, 0.0) for pid, v in b[n].items()) for n in b}
        self.machine = (bb - ab) / self.wall
        self.cores = (bt - at) / self.wall

    def line(self):
        parts = ", ".join(f"{n} {100 * v / self.wall:.0f}%" for n, v in self.used.items())
        return f"CPU over the window: {parts}; machine {100 * self.machine:.0f}% of {100 * self.cores:.0f}%"


def write_config(path, broker, keys, store_url, client_id, share_group=None):
    lines = ["[broker]", f'host = "{broker.host}"', f"port = {broker.port}",
             "[store]", f'url = "{store_url}"', "[keys]", f'keystore = "{keys}"',
             "[reconcile]"] + [f"{k} = {v}" for k, v in PROVIDER_OPTS.items()] + \
            ["[service]", f'client_id = "{client_id}"'] + ([f'share_group = "{share_group}"'] if share_group else [])
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def run_config(work, broker, keys, store_url, processes, share_group, label):
    """Start the providers, then the devices; returns reports/s."""
    procs = []
    for i in range(processes):
        cfg = os.path.join(work, f"dsa-{label}-{i}.toml")
        write_config(cfg, broker, keys, store_url, f"dsa-{label}-{i}", share_group)
        procs.append(subprocess.Popen([sys.executable, "-m", "capshard", "dsa", "run", cfg, "--quiet"],
                                      stdout=subprocess.DEVNULL, stderr=open(cfg + ".log", "w"),
                                      cwd=work, env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "host"))))
    time.sleep(2.0 + processes * 0.5)  # imports, catalog, connect
    sim = subprocess.Popen([sys.executable, os.path.join(HERE, "simdevices.py"), broker.host, str(broker.port),
                            keys, f"{label}-", str(DEVICES), "fleet", str(SECONDS)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    cpu = CpuWindow({"providers": lambda: [p.pid for p in procs], "devices": lambda: [sim.pid],
                     "broker": lambda: [broker.proc.pid], "database": lambda: named_pids("postgres")})
    try:
        if not sim.stdout.readline():
            raise RuntimeError(f"[{label}] simulated devices did not come up")
        time.sleep(1.0)   # the checks after the initial syncs
        sim.stdin.write("go\n")
        sim.stdin.flush()
        cpu.start()
        out = json.loads(sim.stdout.readline())
        cpu.stop()
        sim.wait(30)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    rate = len(out["samples"]) / (out["t1"] - out["t0"])
    print(f"[{label}] {processes} provider process(es), {DEVICES} devices: {len(out['samples'])} reports -> "
          f"instructions in {out['t1'] - out['t0']:.1f} s = {rate:.0f} reports/s "
          f"(lost {out['lost']}, bad MAC {out['bad_mac']})", flush=True)
    per_cpu = len(out["samples"]) / max(cpu.used["providers"], 1e-9)
    print(f"[{label}] {cpu.line()}; {per_cpu:.0f} reports per provider-CPU-second", flush=True)
    return rate, per_cpu


def main():
    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="capshard-fleet-")
    broker = Mosquitto(extra_config="set_tcp_nodelay true").start()
    pg = None
    try:
        report = cbor2.dumps({"v": 1, "dev": "raw-0", "seq": 1, "t": int(time.time()), "classes": NEEDS[1],
                              "security": SECURITY[1]})
        raw = broker_raw(broker, report)
        print(f"[broker raw] paho publisher -> mosquitto -> paho subscriber, QoS 1, {len(report)}-byte "
              f"payloads: {raw:.0f} messages/s", flush=True)
        keystore = Keystore()
        labels = ("sqlite1", "pg1", "pg2", "pg4")
        for label in labels:
            for i in range(DEVICES):
                keystore.provision(f"{label}-{i:04d}")
        keys = os.path.join(work, "keys.json")
        keystore.save(keys)
        r1, r1_cpu = run_config(work, broker, keys, os.path.join(work, "fleet.sqlite"), 1, None, "sqlite1")

        from conftest import _fresh_pg_db, _PgServer   # the service tests' private PostgreSQL
        pg = _PgServer().start()
        rates, per_cpu = {}, {}
        for n, label in ((1, "pg1"), (2, "pg2"), (4, "pg4")):
            rates[n], per_cpu[n] = run_config(work, broker, keys, _fresh_pg_db(pg), n, "dsa", label)
        s2, s4 = rates[2] / rates[1], rates[4] / rates[1]
        print(f"[postgresql] speed-up over one process: 2 processes {s2:.2f}x, 4 processes {s4:.2f}x "
              f"({os.cpu_count()} CPU cores for providers, devices, broker and database together)")
        print(f"[per CPU] reports per provider-CPU-second: sqlite {r1_cpu:.0f}; postgresql 1 process "
              f"{per_cpu[1]:.0f}, 2 processes {per_cpu[2]:.0f}, 4 processes {per_cpu[4]:.0f}")
        print(f"[ratio] one provider turns {r1:.0f} reports/s into instructions; each costs 4 broker messages "
              f"(report, instruction, ack, state): {4 * r1:.0f} messages/s of the broker's {raw:.0f}")
        print(f"elapsed {time.monotonic() - started:.0f} s")
    finally:
        if pg is not None:
            pg.stop()
        broker.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    print(f"fleet: reports_per_s={r1:.0f} broker_raw_per_s={raw:.0f} ratio={r1 / raw:.3f} "
          f"speedup_2={s2:.2f} speedup_4={s4:.2f}")


if __name__ == "__main__":
    main()
