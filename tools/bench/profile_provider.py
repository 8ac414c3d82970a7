"""Profile the provider's hot path per QoS report, without device processes:
the messages a device sends (qos, then ack and state for the instruction it
got) are handed to the service's MQTT handler as paho would, and the
reconciler runs in this thread, so cProfile sees the whole path: decode,
store writes, allocate, sign, publish (to a real mosquitto).

    python tools/bench/profile_provider.py [--devices 200] [--reports 2000] [--store sqlite|memory|URL] [--top 25] [--no-profile]

Prints the time per report (wall clock and this process's CPU time) and
reports/s, first without, then with the profiler, and the functions that
take the most time. --no-profile stops after the plain run, for A/B runs.
"""

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "host"))

import cbor2  # noqa: E402

from capshard import wire  # noqa: E402
from capshard.broker import Mosquitto  # noqa: E402
from capshard.keys import Keystore  # noqa: E402
from capshard.service.fleet import Fleet  # noqa: E402
from capshard.service.policy import AllocatorPolicy  # noqa: E402
from capshard.service.provider import ProviderService  # noqa: E402
from capshard.service.reconcile import ReconcileOptions  # noqa: E402
from capshard.service.store import open_store  # noqa: E402

sys.path.insert(0, HERE)
from simdevices import CODES, NEEDS, SECURITY  # noqa: E402


class Msg:
    def __init__(self, topic, payload):
        self.topic, self.payload = topic, payload
        self.qos, self.mid = 0, 0   # nothing to acknowledge to the broker


class Harness:
    def __init__(self, svc, n):
        self.svc = svc
        self.ids = [f"p-{i:04d}" for i in range(n)]
        self.sent = []
        self.profiles = {d: {} for d in self.ids}
        self.seq = {d: 0 for d in self.ids}
        publish = svc._publish

        def spy(device_id, inst):
            publish(device_id, inst)
            self.sent.append(inst)
        svc._publish = spy

    def deliver(self, device_id, kind, obj, into=None):
        """Hand a message to the service now, or add it to ``into``: messages
        waiting together are recorded together, as the service's inbox does."""
        msg = Msg(wire.topic(device_id, kind), cbor2.dumps(obj))
        if into is None:
            self.svc.handle_messages([msg])
        else:
            into.append(msg)

    def answer(self):
        """Each device acks what it was sent and publishes its state."""
        sent, self.sent = self.sent, []
        inbox = []
        for inst in sent:
            d = inst["dev"]
            prof = {} if inst["full"] else self.profiles[d]
            results = []
            for op in inst["ops"]:
                if op["op"] == "deactivate":
                    prof.pop(op["shard"], None)
                else:
                    prof[op["shard"]] = op
                results.append({"shard": op["shard"], "op": op["op"], "code": CODES[op["op"]], "reason": ""})
            self.profiles[d] = prof
            self.deliver(d, "ack", {"v": 1, "dev": d, "id": inst["id"], "seq": inst["seq"], "status": "applied",
                                    "reason": "", "results": results}, inbox)
            self.deliver(d, "state", {"v": 1, "dev": d, "online": True, "seq": inst["seq"], "profile": prof,
                                      "shards": {}}, inbox)
        if inbox:
            self.svc.handle_messages(inbox)
        return len(sent)

    def settle(self, now):
        while True:
            self.svc.reconcile_once(now)
            if not self.answer():
                return

    def births(self):
        for d in self.ids:
            self.deliver(d, "birth", {"v": 1, "dev": d, "board": "simulated", "fw": "sim", "runtime": "cpython",
                                      "caps": {"cpu": 100, "mem_kb": 300, "bw_kbps": 20000}, "last_seq": 0})
        self.settle(time.time() + 5)

    def reports(self, count, now_offset):
        """``count`` reports round-robin over the devices; returns instructions sent."""
        made = 0
        inbox = []
        for k in range(count):
            d = self.ids[k % len(self.ids)]
            self.seq[d] += 1
            which = self.seq[d] % 2
            self.deliver(d, "qos", {"v": 1, "dev": d, "seq": self.seq[d], "t": int(time.time()),
                                    "classes": NEEDS[which], "security": SECURITY[which]}, inbox)
            if k % len(self.ids) == len(self.ids) - 1 or k == count - 1:
                self.svc.handle_messages(inbox)
                inbox = []
                # a round: every device planned, sent, acked, checked
                while True:
                    self.svc.reconcile_once(time.time() + now_offset)
                    sent = self.answer()
                    if not sent and not self.svc.store.due_work(time.time() + now_offset, 1):
                        break
                    made += sent
        return made


def make_service(broker, keystore, store_url):
    opts = ReconcileOptions(replan_delay_s=0.0, check_delay_s=0.0, rate_per_s=1e9, burst=10 ** 9)
    fleet = Fleet(open_store(store_url))
    svc = ProviderService(broker.host, broker.port, keystore, fleet=fleet, policy=AllocatorPolicy.from_files(),
                          options=opts, client_id="profiler")
    svc.client.connect(broker.host, broker.port)
    svc.client.loop_start()
    return svc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--reports", type=int, default=2000)
    ap.add_argument("--store", default="sqlite")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--no-profile", action="store_true", help="time the plain run only (for A/B comparisons)")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="capshard-prof-")
    broker = Mosquitto().start()
    try:
        keystore = Keystore()
        results = {}
        for phase in ("plain", "profiled"):
            url = {"sqlite": os.path.join(work, f"{phase}.sqlite"), "memory": ":memory:"}.get(a.store, a.store)
            h = Harness(make_service(broker, keystore, url), a.devices)
            for d in h.ids:
                keystore.provision(d)
            h.births()
            h.reports(a.devices * 2, 2)   # warm up (caches, plans for both needs)
            prof = cProfile.Profile() if phase == "profiled" else None
            t0, c0 = time.perf_counter(), time.process_time()
            if prof:
                prof.enable()
            made = h.reports(a.reports, 3)
            if prof:
                prof.disable()
            dt = time.perf_counter() - t0
            # CPU time of this process (all its threads, paho's included), not
            # the broker's: steadier than the wall clock on a busy machine.
            cpu = time.process_time() - c0
            results[phase] = (dt, cpu, made)
            print(f"[{phase}] {a.reports} reports -> {made} instructions in {dt:.2f} s: "
                  f"{dt / a.reports * 1e6:.0f} us per report, {a.reports / dt:.0f} reports/s, "
                  f"{cpu / a.reports * 1e6:.0f} CPU-us per report", flush=True)
            h.svc.client.loop_stop()
            h.svc.client.disconnect()
            h.svc.store.close()
            if a.no_profile:
                break
        if not a.no_profile:
            print_profile(prof, a.top)
        dt, cpu, made = results["plain"]
        print(f"profile: store={a.store} us_per_report={dt / a.reports * 1e6:.0f} "
              f"cpu_us_per_report={cpu / a.reports * 1e6:.0f} reports_per_s={a.reports / dt:.0f} instructions={made}")
    finally:
        broker.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def print_profile(prof, top):
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(top)
    print(out.getvalue())
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    print(out.getvalue())
    out = io.StringIO()   # store calls per report: each is one transaction
    pstats.Stats(prof, stream=out).sort_stats("ncalls").print_stats(r"service/store\.py", top)
    print(out.getvalue())


if __name__ == "__main__":
    main()
