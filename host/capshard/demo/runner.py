"""Plays the demo: a private mosquitto, the provider service with the
allocator, and devices running the real firmware, driven through the
scenario steps. Every step's expectation is checked against what the devices
report; the run fails if any is not met."""

import json
import os
import threading
import time
from dataclasses import dataclass, field

from .. import localdev
from ..broker import Mosquitto
from ..keys import Keystore
from ..service.policy import AllocatorPolicy
from ..service.provider import ProviderService


@dataclass
class StepResult:
    title: str
    device_id: str
    passed: bool
    seconds: float
    detail: str


@dataclass
class Timeline:
    """Samples of what each device ran and needed, for the chart."""
    start: float = field(default_factory=time.time)
    samples: list = field(default_factory=list)   # (t, device id, [shards], [classes])
    marks: list = field(default_factory=list)     # (t, step title)

    def sample(self, fleet):
        t = time.time() - self.start
        for device_id, rec in fleet.devices.items():
            classes = sorted((rec.needs or {}).get("classes", {}))
            self.samples.append((t, device_id, sorted(rec.reported), classes))

    def mark(self, title):
        self.marks.append((time.time() - self.start, title))


class DemoRun:
    def __init__(self, workdir, devices, steps, say=print):
        self.workdir = workdir
        self.devices = devices
        self.steps = steps
        self.say = say
        self.timeline = Timeline()
        self.results = []
        self.procs = {}
        self.service = None
        self._stop = threading.Event()

    # ---- set-up -------------------------------------------------------------
    def _device_dir(self, device_id):
        return os.path.join(self.workdir, device_id)

    def _write(self, device_id, name, data):
        path = os.path.join(self._device_dir(device_id), name)
        with open(path + ".tmp", "w") as f:
            json.dump(data, f)
        os.replace(path + ".tmp", path)

    def _start_devices(self, broker):
        keystore = self.service.keystore
        for dev in self.devices:
            self.service.assign_agreement(dev.device_id, dev.tier, by="demo")
            d = localdev.provision_dir(self._device_dir(dev.device_id), keystore, dev.device_id,
                                       broker.host, broker.port, board_overrides=dev.board_overrides())
            self._write(dev.device_id, "traffic.json", {"kinds": []})
            self.procs[dev.device_id] = localdev.spawn_agent(dev.runtime, d, heap_kb=dev.heap_kb)
            self.say(f"device {dev.device_id} ({dev.runtime}, tier {dev.tier}) started")

    def _sampler(self):
        """Samples the fleet for the chart, and prints each device's needs and
        shards whenever they change: the live view."""
        shown = {}
        while not self._stop.wait(0.5):
            try:
                self.timeline.sample(self.service.fleet)
                latest = {}
                for _, device_id, shards, classes in self.timeline.samples[-len(self.devices):]:
                    latest[device_id] = (tuple(shards), tuple(classes))
            except Exception:  # the store may be closing at the end of the run
                continue
            for device_id, (shards, classes) in sorted(latest.items()):
                if shown.get(device_id) != (shards, classes):
                    shown[device_id] = (shards, classes)
                    self.say(f"  {device_id:<13} needs: {', '.join(classes) or '-':<46} "
                             f"shards: {', '.join(shards)}")

    # ---- steps --------------------------------------------------------------
    def _events_since(self, device_id, since):
        return [text for t, dev, text in self.service.fleet.events if dev == device_id and t >= since]

    def _check(self, step, since):
        rec = self.service.fleet.device(step.device_id)
        if rec is None:
            return False, "device unknown to the provider"
        running = set(rec.reported)
        missing = [s for s in step.expect_running if s not in running]
        present = [s for s in step.expect_absent if s in running]
        event_ok = step.expect_event is None or any(
            step.expect_event in text for text in self._events_since(step.device_id, since))
        if missing or present or not event_ok:
            why = []
            if missing:
                why.append("not running: " + ", ".join(missing))
            if present:
                why.append("still running: " + ", ".join(present))
            if not event_ok:
                why.append(f"no '{step.expect_event}' event")
            return False, "; ".join(why)
        return True, "runs " + ", ".join(sorted(running))

    def _play(self, step):
        self.timeline.mark(step.title)
        self.say(f"scenario: {step.title} [{step.device_id}]")
        since = time.time()
        if step.traffic is not None:
            self._write(step.device_id, "traffic.json", {"kinds": step.traffic})
        if step.crash is not None:
            self._write(step.device_id, "faults.json", {"fail_health": step.crash})
        ok, detail = self._await(step, since, since + step.timeout_s)
        if ok and step.settle_s:
            time.sleep(step.settle_s)
            ok, detail = self._await(step, since, time.time() + 0.1)
        result = StepResult(step.title, step.device_id, ok, time.time() - since, detail)
        self.results.append(result)
        self.say(f"  {'ok' if ok else 'FAILED'} after {result.seconds:.1f} s: {detail}")
        return ok

    def _await(self, step, since, deadline):
        while True:
            ok, detail = self._check(step, since)
            if ok or time.time() >= deadline:
                return ok, detail
            time.sleep(0.3)

    def _wait_for_baselines(self, timeout):
        def ready(fleet):
            for dev in self.devices:
                rec = fleet.device(dev.device_id)
                if rec is None or not rec.online or not rec.reported or not rec.converged:
                    return False
            return True
        return self.service.fleet.wait_until(ready, timeout)

    # ---- the run ------------------------------------------------------------
    def run(self, baseline_timeout=60):
        with Mosquitto(workdir=os.path.join(self.workdir, "broker")) as broker:
            self.say(f"mosquitto listening on {broker.host}:{broker.port}")
            policy = AllocatorPolicy.from_files(default_tier="standard")
            self.service = ProviderService(broker.host, broker.port, Keystore(), policy=policy)
            with self.service:
                self.say("provider service running the Dynamic Shard Allocator")
                sampler = threading.Thread(target=self._sampler, daemon=True)
                sampler.start()
                try:
                    self._start_devices(broker)
                    if not self._wait_for_baselines(baseline_timeout):
                        self.results.append(StepResult("devices join and run their baseline", "*", False,
                                                       baseline_timeout, self._logs_tail()))
                        return False
                    self.say("every device runs its tier's baseline")
                    for step in self.steps:
                        self._play(step)
                finally:
                    self._stop.set()
                    sampler.join(2)
                    for proc in self.procs.values():
                        localdev.stop(proc)
        return all(r.passed for r in self.results)

    def _logs_tail(self):
        out = []
        for device_id, proc in self.procs.items():
            out.append(f"--- {device_id}\n" + localdev.read_log(proc)[-800:])
        return "\n".join(out)
