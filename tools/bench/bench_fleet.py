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

After step 2, [transport ceiling]: an echo provider doing only the provider's
MQTT part with paho (same client settings, copies of real signed
instructions, no store, planning or signing per report) against the same
devices: the reports/s paho in one CPython process allows, and the share of
it the real provider reaches.

Every configuration also prints where the CPU went during its measured
window (providers, simulated devices, broker, database, whole machine) and
reports per provider-CPU-second: on a small machine all of them share the
cores, so that figure tells the provider's own cost from the machine's limit.

Last line: ``fleet: reports_per_s=R broker_raw_per_s=W ratio=X speedup_2=S2 speedup_4=S4``
(R from step 2, X = R / W).

``--smoke`` runs every step at a tiny size (8 devices, 2 s windows): a check
that the bench works end to end (tests/tools/test_benches.py), not a figure.
"""

import collections
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(ROOT, "host"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import cbor2  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

from capshard import wire  # noqa: E402
from capshard.broker import Mosquitto  # noqa: E402
from capshard.keys import Keystore  # noqa: E402

from simdevices import NEEDS, SECURITY  # noqa: E402

DEVICES = 400          # closed-loop devices: several in flight per provider at all times
SECONDS = 12.0         # measured window per configuration
RAW_MESSAGES = 30000
# Broker deliveries per report with one provider: the report, the device's ack
# and its state to the provider, the instruction to the device (the provider
# subscribes per device kind, so its instruction does not come back to it).
MESSAGES_PER_REPORT = 4
PROVIDER_OPTS = {"replan_delay_s": 0.0, "rate_per_s": 1000000, "burst": 1000000}


def smoke():
    """--smoke: every step, tiny; the figures mean nothing."""
    global DEVICES, SECONDS, RAW_MESSAGES, CEILING_SECONDS
    DEVICES, SECONDS, RAW_MESSAGES, CEILING_SECONDS = 8, 2.0, 500, 2.0


def broker_raw(broker, payload, count):
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

    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="raw-sub")
    sub.on_message = on_message
    sub.on_subscribe = lambda *args: subscribed.set()
    sub.connect(broker.host, broker.port)
    sub.subscribe("capshard/v1/dev/raw-0/qos", qos=1)
    sub.loop_start()
    if not subscribed.wait(30):   # a message published before the SUBACK would reach nobody
        raise RuntimeError("[broker raw] the subscriber got no SUBACK")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="raw-pub")
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    for _ in range(count):
        pub.publish("capshard/v1/dev/raw-0/qos", payload, qos=1)
    if not done.wait(120):
        raise RuntimeError(f"[broker raw] {got[0]} of {count} QoS 1 messages arrived")
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
    try:
        out, cpu = drive_devices(broker, keys, label, SECONDS, "providers", [p.pid for p in procs], database=True)
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


def drive_devices(broker, keys, label, seconds, group, pids, database=False):
    """Run DEVICES closed-loop simulated devices ``{label}-NNNN`` for ``seconds``
    against providers already listening (``pids``, CPU group ``group``).
    Returns the devices' JSON summary and the CpuWindow of the measured window."""
    sim = subprocess.Popen([sys.executable, os.path.join(HERE, "simdevices.py"), broker.host, str(broker.port),
                            keys, f"{label}-", str(DEVICES), "fleet", str(seconds)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    groups = {group: lambda: pids, "devices": lambda: [sim.pid], "broker": lambda: [broker.proc.pid]}
    if database:
        groups["database"] = lambda: named_pids("postgres")
    cpu = CpuWindow(groups)
    if not sim.stdout.readline():
        raise RuntimeError(f"[{label}] simulated devices did not come up")
    time.sleep(1.0)   # the checks after the initial syncs
    sim.stdin.write("go\n")
    sim.stdin.flush()
    cpu.start()
    out = json.loads(sim.stdout.readline())
    cpu.stop()
    sim.wait(30)
    return out, cpu


# ---- [transport ceiling]: the provider's MQTT work and nothing else ----------------
# An echo provider, configured like the real one (paho-mqtt, MQTT 3.1.1, QoS 1,
# manual acks, TCP_NODELAY, one subscription filter per kind a device sends, so
# its own instructions do not come back), with no store, no planning and no
# CBOR/COSE work on the hot path: on a birth or a report it publishes the device's next instruction,
# signed ahead of time; acks and states it only counts. Its reports/s bound
# what a provider built this way (paho, one CPython process) can reach here.

CEILING_LABEL = "ceiling"   # as long as "sqlite1": same device ids, so same topic and payload sizes
CEILING_SECONDS = 8.0       # the rate is steady: a shorter window keeps the bench's runtime down
CEILING_AHEAD = 120         # instructions signed ahead per device; any more are signed on the fly, and counted


class InstructionSniffer:
    """Keeps the instructions one device receives during a real run, decoded,
    so the echo provider sends copies of real ones."""

    def __init__(self, broker, device_id):
        self.got = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-inst-sniffer")
        self.client.on_message = lambda c, u, m: self.got.append(cbor2.loads(cbor2.loads(m.payload).value[2]))
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(wire.topic(device_id, wire.INSTRUCTION), qos=1)
        self.client.loop_start()

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()

    def recipe(self):
        """The first full sync's ops and the last two re-plans' ops (a report
        alternates between two needs, so these two alternate too)."""
        replans = [i for i in self.got if not i["full"] and not i.get("rebirth")]
        syncs = [i for i in self.got if i["full"]]
        if not syncs or len(replans) < 2:
            raise RuntimeError(f"captured {len(self.got)} instructions, too few to copy")
        return {"sync": syncs[0]["ops"], "cycle": [replans[-2]["ops"], replans[-1]["ops"]],
                "ttl_s": replans[-1]["ttl_s"]}


class EchoDevice:
    """One device's instructions: seq 1 the full sync, then the two re-plans
    in turn, signed ahead with its key."""

    def __init__(self, device_id, keystore, recipe, ahead):
        self.id = device_id
        self.topic = wire.topic(device_id, wire.INSTRUCTION)
        self.kid, self.key = keystore.get(device_id)
        self.recipe = recipe
        self.seq = 0
        self.late = 0
        self.ready = collections.deque(self._sign_next() for _ in range(ahead + 1))

    def _sign_next(self):
        self.seq += 1
        full = self.seq == 1
        ops = self.recipe["sync"] if full else self.recipe["cycle"][self.seq % 2]
        inst = wire.make_instruction(self.id, self.seq, ops, full, time.time(), self.recipe["ttl_s"])
        return wire.sign_instruction(inst, self.key, self.kid)

    def next_payload(self):
        if self.ready:
            return self.ready.popleft()
        self.late += 1
        return self._sign_next()


def echo_provider(host, port, keys_path, prefix, count, recipe_path):
    """The echo provider process: prints "ready" once subscribed, serves until
    its stdin closes, then prints the messages it handled (JSON)."""
    with open(recipe_path) as f:
        recipe = json.load(f)
    keystore = Keystore.load(keys_path)
    devices = {}
    for i in range(count):
        device_id = f"{prefix}{i:04d}"   # as the bench provisions them
        devices[device_id] = EchoDevice(device_id, keystore, recipe, CEILING_AHEAD)
    handled = collections.Counter()
    subscribed = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe([(wire.subscription(kind), 1) for kind in wire.DEVICE_KINDS])   # as the provider does

    def on_message(client, userdata, message):
        # All on paho's network thread: no hand-over to other threads to pay for.
        topic = message.topic
        cut = topic.rfind("/")
        kind = topic[cut + 1:]
        handled[kind] += 1
        if kind == "qos" or kind == "birth":
            device = devices.get(topic[len(wire.PREFIX):cut])
            if device is not None:
                client.publish(device.topic, device.next_payload(), qos=1)
        if message.qos == 1:
            client.ack(message.mid, 1)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"echo-{prefix}",
                         protocol=mqtt.MQTTv311, manual_ack=True)
    client.on_connect = on_connect
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_message = on_message
    client.connect(host, port, keepalive=30)
    client.loop_start()
    if not subscribed.wait(10):
        raise RuntimeError("echo provider: no subscription")
    print("ready", flush=True)
    sys.stdin.read()
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"handled": handled, "signed_late": sum(d.late for d in devices.values())}), flush=True)


def run_ceiling(work, broker, keys, recipe, real_rate, real_per_cpu):
    """The echo provider against DEVICES simulated devices; returns reports/s."""
    recipe_path = os.path.join(work, "echo-recipe.json")
    with open(recipe_path, "w") as f:
        json.dump(recipe, f)
    echo = subprocess.Popen([sys.executable, os.path.abspath(__file__), "echo-provider", broker.host,
                             str(broker.port), keys, f"{CEILING_LABEL}-", str(DEVICES), recipe_path],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if echo.stdout.readline().strip() != "ready":
            raise RuntimeError("[transport ceiling] the echo provider did not come up")
        out, cpu = drive_devices(broker, keys, CEILING_LABEL, CEILING_SECONDS, "echo provider", [echo.pid])
        echo.stdin.close()
        echoed = json.loads(echo.stdout.readline())
        echo.wait(10)
    finally:
        if echo.poll() is None:
            echo.kill()
    reports = len(out["samples"])
    rate = reports / (out["t1"] - out["t0"])
    per_cpu = reports / max(cpu.used["echo provider"], 1e-9)
    print(f"[transport ceiling] echo provider (paho only, no store/plan/sign), {DEVICES} devices: {rate:.0f} "
          f"reports/s; the real provider reaches {real_rate / rate:.0%} of it ({real_rate:.0f} reports/s)",
          flush=True)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(echoed["handled"].items()))
    print(f"[transport ceiling] {reports} reports in {out['t1'] - out['t0']:.1f} s (lost {out['lost']}, bad MAC "
          f"{out['bad_mac']}); messages it received over its run: {kinds} (subscribed per device kind, as the real "
          f"provider: none of its own instructions); signed on the fly {echoed['signed_late']}", flush=True)
    print(f"[transport ceiling] {cpu.line()}; {per_cpu:.0f} reports per provider-CPU-second "
          f"(real provider: {real_per_cpu:.0f})", flush=True)
    return rate


def main():
    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="capshard-fleet-")
    broker = Mosquitto(extra_config="set_tcp_nodelay true").start()
    pg = None
    try:
        report = cbor2.dumps({"v": 1, "dev": "raw-0", "seq": 1, "t": int(time.time()), "classes": NEEDS[1],
                              "security": SECURITY[1]})
        raw = broker_raw(broker, report, RAW_MESSAGES)
        print(f"[broker raw] paho publisher -> mosquitto -> paho subscriber, QoS 1, {len(report)}-byte "
              f"payloads: {raw:.0f} messages/s", flush=True)
        keystore = Keystore()
        labels = ("sqlite1", CEILING_LABEL, "pg1", "pg2", "pg4")
        for label in labels:
            for i in range(DEVICES):
                keystore.provision(f"{label}-{i:04d}")
        keys = os.path.join(work, "keys.json")
        keystore.save(keys)
        sniffer = InstructionSniffer(broker, "sqlite1-0000")   # real instructions, for the echo provider
        try:
            r1, r1_cpu = run_config(work, broker, keys, os.path.join(work, "fleet.sqlite"), 1, None, "sqlite1")
        finally:
            sniffer.stop()
        run_ceiling(work, broker, keys, sniffer.recipe(), r1, r1_cpu)

        from pgserver import PgServer, fresh_db   # the tests' private PostgreSQL
        pg = PgServer().start()
        rates, per_cpu = {}, {}
        for n, label in ((1, "pg1"), (2, "pg2"), (4, "pg4")):
            rates[n], per_cpu[n] = run_config(work, broker, keys, fresh_db(pg), n, "dsa", label)
        s2, s4 = rates[2] / rates[1], rates[4] / rates[1]
        print(f"[postgresql] speed-up over one process: 2 processes {s2:.2f}x, 4 processes {s4:.2f}x "
              f"({os.cpu_count()} CPU cores for providers, devices, broker and database together)")
        print(f"[per CPU] reports per provider-CPU-second: sqlite {r1_cpu:.0f}; postgresql 1 process "
              f"{per_cpu[1]:.0f}, 2 processes {per_cpu[2]:.0f}, 4 processes {per_cpu[4]:.0f}")
        print(f"[ratio] one provider turns {r1:.0f} reports/s into instructions; each report costs "
              f"{MESSAGES_PER_REPORT} broker messages delivered (report, ack and state to the provider, instruction "
              f"to the device): {MESSAGES_PER_REPORT * r1:.0f} messages/s of the broker's {raw:.0f} "
              f"({MESSAGES_PER_REPORT * r1 / raw:.0%})")
        print(f"elapsed {time.monotonic() - started:.0f} s")
    finally:
        if pg is not None:
            pg.stop()
        broker.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    print(f"fleet: reports_per_s={r1:.0f} broker_raw_per_s={raw:.0f} ratio={r1 / raw:.3f} "
          f"speedup_2={s2:.2f} speedup_4={s4:.2f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["echo-provider"]:
        host, port, keys, prefix, count, recipe = sys.argv[2:]
        echo_provider(host, int(port), keys, prefix, int(count), recipe)
    else:
        if sys.argv[1:] == ["--smoke"]:
            smoke()
        main()
