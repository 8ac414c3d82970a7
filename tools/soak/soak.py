"""Soak: the whole system under a long, messy load, then an account of what
was lost. `make soak MINUTES=N` runs it for N minutes:

- a private mosquitto, and `capshard dsa run` as its own process on a SQLite
  fleet store (the shipped catalog, tier "standard");
- 200 lightweight protocol devices (tools/bench/simdevices.py) in this
  process, each sending QoS reports whose needs alternate, at random times;
- 2 full device agents under MicroPython (.mpy, 320 KiB heap) playing random
  synthetic traffic (traffic.json), so their needs change for real;
- churn: every few seconds a lightweight device drops its link abruptly and
  comes back a few seconds later;
- broker restarts: kill -9 of mosquitto, restarted on the same port;
- shard failures: faults.json makes a running shard of a MicroPython agent
  fail its health checks.

At the end churn stops, every device is back, and after a settle period the
instruction log is read. An instruction is *lost* if the provider sent it and
it is neither answered (SUCCEEDED, REJECTED, FAILED) nor superseded by a
newer full state. Convergence time: from a lightweight device's QoS report to
the provider recording the ack of the instruction it caused. The MicroPython
heap is the resident heap_used of the agents' health messages, compared like
with like: the first samples taken with the profile the agent ends with
against the last ones (running shards use heap, so a bigger profile is not a
leak); the provider's memory is its VmRSS.

Last line, exactly:
soak: minutes=M devices=D instructions=I lost=L converge_p99_s=C mp_heap_growth_kb=G
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import cbor2

from capshard import localdev
from capshard.broker import Mosquitto
from capshard.demo.scenarios import DEMO_RNMA, DEVICE_MODULES
from capshard.keys import Keystore
from capshard.service.store import StoreError, open_store

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
from simdevices import SimDevice  # noqa: E402  (another tool's module, imported from its directory)

ANSWERED = ("SUCCEEDED", "REJECTED", "FAILED")
TRAFFIC_KINDS = ("game", "call", "video", "bulk", "browsing", "banking")
MP_CAPS = {"cpu": 100, "mem_kb": 160, "bw_kbps": 20000}


def say(text):
    print(f"[soak {time.strftime('%H:%M:%S')}] {text}", flush=True)


class SoakDevice(SimDevice):
    """A SimDevice that survives its link going away: it reconnects (with
    jittered backoff) and, like the real agent, answers a redelivered
    instruction with the ack it already sent instead of staying silent."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.last_ack = None
        self.link_up = asyncio.Event()
        self.link_down = asyncio.Event()
        self.link_down.set()

    def publish(self, kind, obj, retain=False):
        if kind == "ack":
            self.last_ack = obj
        if self.writer is not None and not self.writer.is_closing():
            super().publish(kind, obj, retain)

    def on_publish(self, first, body):
        tlen = struct.unpack_from("!H", body)[0]
        pos = 2 + tlen + (2 if (first >> 1) & 3 else 0)
        payload = self.verify(body[pos:])
        if payload is not None and self.last_ack is not None:
            inst = cbor2.loads(payload)
            if inst.get("id") == self.last_ack["id"]:
                if (first >> 1) & 3:
                    self.writer.write(b"\x40\x02" + body[2 + tlen:pos])
                self.stats["duplicates"] += 1
                self.publish("ack", self.last_ack)
                return
        super().on_publish(first, body)

    async def read_loop(self, reader):
        self.link_down.clear()
        self.link_up.set()
        try:
            await super().read_loop(reader)
        finally:
            self.link_up.clear()
            self.link_down.set()

    def drop(self):
        """Lose the link abruptly (no DISCONNECT: the broker sends the will)."""
        if self.writer is not None:
            self.writer.transport.abort()


class Soak:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.work = a.workdir or tempfile.mkdtemp(prefix="capshard-soak-")
        self.keystore = Keystore()
        self.broker = None
        self.dsa = None
        self.agents = {}
        self.sims = []
        self.samples = []           # (report sent at, instruction id)
        self.stats = {"instructions": 0, "lost": 0, "bad_mac": 0, "duplicates": 0}
        self.counts = {"churn": 0, "broker_restarts": 0, "shard_failures": 0, "needs_changes": 0, "reports": 0}
        self.heap = {}              # device id -> [(health t, heap_used, monotonic time seen, shards)]
        self.first_traffic = {}     # device id -> traffic kinds at the start
        self.start_profile = {}     # device id -> shards it ran at the start
        self.rss = []
        self.stopping = False
        self.heap_from = None

    # ---- set-up -------------------------------------------------------------
    def start_provider(self):
        cfg = os.path.join(self.work, "dsa.toml")
        with open(cfg, "w") as f:
            f.write(f'[broker]\nhost = "{self.broker.host}"\nport = {self.broker.port}\n'
                    f'[store]\nurl = "fleet.sqlite"\n[keys]\nkeystore = "keys.json"\n'
                    f'[allocator]\ndefault_tier = "standard"\n')
        log = open(os.path.join(self.work, "dsa.log"), "w")
        self.dsa = subprocess.Popen([sys.executable, "-m", "capshard", "dsa", "run", cfg, "--quiet"],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(self.work, "fleet.sqlite")):
            if self.dsa.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("soak: the provider did not start:\n" + self.read("dsa.log"))
            time.sleep(0.1)
        time.sleep(1)  # subscribed by then
        self.store = open_store(os.path.join(self.work, "fleet.sqlite"), migrate=False)

    def read(self, name):
        with open(os.path.join(self.work, name), errors="replace") as f:
            return f.read()

    def start_agents(self):
        for i in range(self.a.mp):
            dev = f"soak-mp-{i}"
            d = os.path.join(self.work, dev)
            localdev.provision_dir(d, self.keystore, dev, self.broker.host, self.broker.port,
                                   board_overrides={"capacities": dict(MP_CAPS), "shards": list(DEVICE_MODULES),
                                                    "rnma": dict(DEMO_RNMA), "traffic_sources": ["synthetic"]})
            self.first_traffic[dev] = [TRAFFIC_KINDS[i % len(TRAFFIC_KINDS)]]
            self.write(dev, "traffic.json", {"kinds": self.first_traffic[dev]})
            self.agents[dev] = d

    def spawn_agents(self):
        for dev, d in self.agents.items():
            self.agents[dev] = (d, localdev.spawn_agent("micropython", d, heap_kb=self.a.heap_kb))

    def write(self, dev, name, data):
        path = os.path.join(self.work, dev, name)
        with open(path + ".tmp", "w") as f:
            json.dump(data, f)
        os.replace(path + ".tmp", path)

    def provider_rss_kb(self):
        try:
            with open(f"/proc/{self.dsa.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None

    # ---- disturbances -------------------------------------------------------
    async def keep_connected(self, d):
        """Reconnect whenever the link is down (churn, broker restarts)."""
        delay = 0.5
        while not self.stopping or not d.link_up.is_set():
            await d.link_down.wait()
            if getattr(d, "away_until", 0) > time.monotonic():
                await asyncio.sleep(d.away_until - time.monotonic())
            try:
                await d.connect()
                delay = 0.5
                await d.link_up.wait()
            except OSError:
                await asyncio.sleep(self.rng.uniform(0, delay))
                delay = min(delay * 2, 8)

    async def report_loop(self, d):
        await asyncio.sleep(self.rng.uniform(0, self.a.report_every))
        while not self.stopping:
            if d.link_up.is_set() and d.synced.is_set():
                self.counts["reports"] += 1
                got = await d.report(timeout=30)
                if got is not None:
                    self.samples.append(got)
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * self.a.report_every)

    async def churn(self):
        while not self.stopping:
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * self.a.churn_every)
            d = self.rng.choice(self.sims)
            if d.link_up.is_set():
                d.away_until = time.monotonic() + self.rng.uniform(1, 5)
                d.drop()
                self.counts["churn"] += 1

    async def broker_restarts(self, period):
        while not self.stopping:
            await asyncio.sleep(period * self.rng.uniform(0.8, 1.2))
            if self.stopping:
                return
            self.broker.kill()
            self.broker.stop()  # closes its log; the process is gone already
            await asyncio.sleep(self.rng.uniform(1, 3))
            self.broker.start()
            self.counts["broker_restarts"] += 1
            say(f"broker killed -9 and restarted on port {self.broker.port}")

    async def mp_needs(self):
        while not self.stopping:
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * self.a.needs_every)
            dev = self.rng.choice(sorted(self.agents))
            kinds = self.rng.sample(TRAFFIC_KINDS, self.rng.randint(0, 2))
            self.write(dev, "traffic.json", {"kinds": kinds})
            self.counts["needs_changes"] += 1

    async def shard_failures(self):
        while not self.stopping:
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * self.a.failure_every)
            dev = self.rng.choice(sorted(self.agents))
            rec = self.device_row(dev)
            running = sorted((rec or {}).get("reported") or {})
            if running:
                shard = self.rng.choice(running)
                self.write(dev, "faults.json", {"fail_health": [shard]})
                self.counts["shard_failures"] += 1
                await asyncio.sleep(10)
                os.remove(os.path.join(self.work, dev, "faults.json"))

    def device_row(self, dev):
        try:
            return self.store.get_device(dev)
        except StoreError:
            return None

    async def sample(self):
        while True:
            for dev in self.agents:
                h = (self.device_row(dev) or {}).get("health")
                if h and h.get("heap_used") is not None:
                    seen = self.heap.setdefault(dev, [])
                    if not seen or seen[-1][0] != h.get("t"):
                        seen.append((h.get("t"), h["heap_used"], time.monotonic(),
                                     frozenset(h.get("shards") or {})))
            await asyncio.sleep(2)

    # ---- the run --------------------------------------------------------------
    async def run(self):
        a = self.a
        self.broker = Mosquitto(port=a.broker_port) if a.broker_port else Mosquitto()
        self.broker.start()
        ids = [f"soak-sim-{i:03d}" for i in range(a.devices)]
        for dev in ids:
            self.keystore.provision(dev)
        self.start_agents()
        self.keystore.save(os.path.join(self.work, "keys.json"))
        self.start_provider()
        self.spawn_agents()
        for dev in ids:
            kid, key = self.keystore.get(dev)
            self.sims.append(SoakDevice(dev, key, kid.decode(), self.broker.host, self.broker.port, self.stats))
        say(f"{len(self.sims)} lightweight + {len(self.agents)} MicroPython devices; broker port "
            f"{self.broker.port}; work dir {self.work}")
        tasks = [asyncio.create_task(self.keep_connected(d)) for d in self.sims]
        await asyncio.wait_for(asyncio.gather(*(d.synced.wait() for d in self.sims)), 120)
        await self.wait_agents_converged(120)
        await asyncio.sleep(5)  # their first needs report and re-plan
        await self.wait_agents_converged(60)
        for dev in self.agents:
            self.start_profile[dev] = set(self.device_row(dev)["reported"])
        self.rss.append(self.provider_rss_kb())
        sampler = asyncio.create_task(self.sample())
        say(f"all devices synced; provider RSS {self.rss[0]} kB; soaking for {a.minutes} min")
        t_end = time.monotonic() + a.minutes * 60
        chaos = [asyncio.create_task(c) for c in (
            self.churn(), self.broker_restarts(max(20.0, a.minutes * 60 / 3)), self.mp_needs(),
            self.shard_failures())]
        chaos += [asyncio.create_task(self.report_loop(d)) for d in self.sims]
        while time.monotonic() < t_end:
            await asyncio.sleep(min(30, max(0.1, t_end - time.monotonic())))
            say(f"{self.progress()}")
        self.stopping = True
        for c in chaos:
            c.cancel()
        await asyncio.gather(*chaos, return_exceptions=True)
        if not self.broker.proc or self.broker.proc.poll() is not None:
            self.broker.start()
        for name in self.agents:
            try:
                os.remove(os.path.join(self.work, name, "faults.json"))
            except OSError:
                pass
            self.write(name, "traffic.json", {"kinds": self.first_traffic[name]})
        say(f"chaos stopped ({self.progress()}); settling up to {a.settle_s:.0f} s")
        for d in self.sims:
            d.away_until = 0
        await asyncio.wait_for(asyncio.gather(*(d.link_up.wait() for d in self.sims)), 60)
        open_left = await self.settle(a.settle_s)
        self.heap_from = await self.agents_back_to_start(60)
        self.rss.append(self.provider_rss_kb())
        sampler.cancel()
        for t in tasks:
            t.cancel()
        return open_left

    def progress(self, online=True):
        c = self.counts
        text = (f"reports {c['reports']}, churn {c['churn']}, broker restarts {c['broker_restarts']}, "
                f"shard failures {c['shard_failures']}, needs changes {c['needs_changes']}")
        if online:
            text += f", online {sum(d.link_up.is_set() for d in self.sims)}/{len(self.sims)}"
        return text

    async def wait_agents_converged(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = [self.device_row(dev) for dev in self.agents]
            if all(r and r["online"] and r["reported"] and r["desired"] and
                   set(r["reported"]) == set(r["desired"]) for r in rows):
                return
            await asyncio.sleep(0.5)
        logs = "\n".join(localdev.read_log(p)[-2000:] for _, p in self.agents.values())
        raise SystemExit("soak: the MicroPython agents did not converge:\n" + logs)

    async def agents_back_to_start(self, timeout):
        """Wait until each agent runs its starting profile again and has sent a
        health message since; returns the monotonic time it was so."""
        deadline = time.monotonic() + timeout
        since = None
        while time.monotonic() < deadline:
            rows = {dev: self.device_row(dev) for dev in self.agents}
            same = all(r and set(r["reported"] or {}) == self.start_profile[dev] for dev, r in rows.items())
            if same and since is None:
                since = time.monotonic()
            elif not same:
                since = None
            if since is not None and all(any(s[2] > since for s in self.heap.get(dev, []))
                                         for dev in self.agents):
                return since
            await asyncio.sleep(1)
        say("warning: the MicroPython agents did not return to their starting profile in time; "
            "the end heap is the last sample")
        return None

    def open_instructions(self):
        rows = self.store.instructions()
        return [r for r in rows if r["sent_at"] and r["state"] not in ANSWERED and not r["superseded_by"]]

    async def settle(self, seconds):
        deadline = time.monotonic() + seconds
        while True:
            try:
                left = self.open_instructions()
            except StoreError:
                left = None
            if left == [] or time.monotonic() > deadline:
                return left
            await asyncio.sleep(1)

    # ---- the account ----------------------------------------------------------
    def account(self):
        rows = [r for r in self.store.instructions() if r["sent_at"]]
        acks = {r["id"]: r["acked_at"] for r in rows if r["state"] in ANSWERED}
        states = {}
        for r in rows:
            states[r["state"]] = states.get(r["state"], 0) + 1
        superseded = sum(1 for r in rows if r["state"] not in ANSWERED and r["superseded_by"])
        lost = [r for r in rows if r["state"] not in ANSWERED and not r["superseded_by"]]
        conv = sorted(acks[i] - sent for sent, i in self.samples if acks.get(i))
        p99 = conv[min(len(conv) - 1, int(0.99 * len(conv)))] if conv else float("nan")
        growth = []
        for dev, seen in sorted(self.heap.items()):
            # Compare like with like: the heap when the agent first ran the
            # profile it ends with, against the end. A bigger profile at the
            # end is more shards loaded, not a leak.
            final = seen[-1][3]
            same = [h for _, h, _, shards in seen if shards == final]
            start, end = statistics.median(same[:3]), statistics.median(same[-3:])
            growth.append(end - start)
            say(f"{dev}: heap_used {start / 1024:.1f} KiB when it first ran its final profile "
                f"({', '.join(sorted(final))}), {end / 1024:.1f} KiB at the end "
                f"({len(same)} of {len(seen)} health samples with that profile)")
        growth_kb = max(growth) / 1024 if growth else float("nan")
        say(f"instructions sent {len(rows)}, acked {len(acks)} ({states}), superseded {superseded}, "
            f"lost {len(lost)}")
        for r in lost[:10]:
            say(f"  lost: {r['device_id']} {r['id']} seq {r['seq']} {r['state']} {r['reason'] or ''}")
        say(f"convergence (report -> ack) over {len(conv)} samples: p50 "
            f"{conv[len(conv) // 2] if conv else float('nan'):.3f} s, p99 {p99:.3f} s")
        say(f"provider RSS start {self.rss[0]} kB, end {self.rss[-1]} kB; lightweight devices answered "
            f"{self.stats['duplicates']} redelivered instruction(s) with their cached ack")
        say(f"disturbances: {self.progress(online=False)}")
        return len(rows), len(lost), p99, growth_kb

    def cleanup(self):
        for entry in self.agents.values():
            if isinstance(entry, tuple):
                localdev.stop(entry[1])
        if self.dsa is not None and self.dsa.poll() is None:
            os.killpg(self.dsa.pid, signal.SIGTERM)
            try:
                self.dsa.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.dsa.pid, signal.SIGKILL)
        if self.broker is not None:
            self.broker.cleanup()
        if not self.a.keep and not self.a.workdir:
            shutil.rmtree(self.work, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--devices", type=int, default=200, help="lightweight devices (default 200)")
    p.add_argument("--mp", type=int, default=2, help="full MicroPython agents (default 2)")
    p.add_argument("--heap-kb", type=int, default=320, help="MicroPython heap cap (default 320)")
    p.add_argument("--report-every", type=float, default=20.0, help="mean seconds between a device's reports")
    p.add_argument("--churn-every", type=float, default=2.0, help="mean seconds between dropped links")
    p.add_argument("--needs-every", type=float, default=20.0, help="mean seconds between MicroPython traffic changes")
    p.add_argument("--failure-every", type=float, default=40.0, help="mean seconds between shard failures")
    p.add_argument("--settle-s", type=float, default=90.0, help="longest wait for open instructions at the end")
    p.add_argument("--broker-port", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", help="keep everything here (default: a temporary directory, removed)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = p.parse_args(argv)
    if a.minutes <= 0 or a.devices < 1 or a.mp < 0:
        p.error("--minutes must be > 0, --devices >= 1, --mp >= 0")
    soak = Soak(a)
    try:
        asyncio.run(soak.run())
        instructions, lost, p99, growth = soak.account()
    finally:
        soak.cleanup()
    devices = a.devices + a.mp
    print(f"soak: minutes={a.minutes:g} devices={devices} instructions={instructions} lost={lost} "
          f"converge_p99_s={p99:.2f} mp_heap_growth_kb={growth:.1f}", flush=True)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
