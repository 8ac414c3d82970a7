"""Fleet state held by the provider: per device what it announced, what we
want it to run (desired, versioned) and what it says it runs (reported), plus
the instruction log. In memory here; thread-safe, with waiters for tests and
the demo."""

import threading
import time
from dataclasses import dataclass, field

QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, REJECTED, TIMED_OUT = (
    "QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT")


@dataclass
class InstructionRecord:
    id: str
    device_id: str
    seq: int
    ops: list
    full: bool
    sent_at: float
    state: str = IN_PROGRESS
    ack: dict | None = None
    acked_at: float | None = None


@dataclass
class DeviceRecord:
    device_id: str
    online: bool = False
    birth: dict | None = None
    desired: dict = field(default_factory=dict)  # shard id -> op
    desired_version: int = 0
    reported: dict = field(default_factory=dict)
    reported_seq: int = 0
    last_seq: int = 0
    needs: dict | None = None
    health: dict | None = None


class Fleet:
    def __init__(self):
        self.devices = {}
        self.instructions = {}
        self.errors = []  # (time, text): every message we could not accept
        self.events = []  # (time, device id, text): what happened, in order
        self._cond = threading.Condition()

    def _device(self, device_id):
        rec = self.devices.get(device_id)
        if rec is None:
            rec = self.devices[device_id] = DeviceRecord(device_id)
        return rec

    def _event(self, device_id, text):
        self.events.append((time.time(), device_id, text))

    def record_error(self, text):
        with self._cond:
            self.errors.append((time.time(), text))
            self._cond.notify_all()

    def record_birth(self, device_id, birth):
        with self._cond:
            rec = self._device(device_id)
            rec.birth = birth
            rec.online = True
            rec.last_seq = max(rec.last_seq, birth.get("last_seq", 0))
            self._event(device_id, f"birth: board {birth.get('board')} on {birth.get('runtime')}")
            self._cond.notify_all()
            return rec

    def set_desired(self, device_id, profile):
        with self._cond:
            rec = self._device(device_id)
            rec.desired = dict(profile)
            rec.desired_version += 1
            return rec.desired_version

    def next_seq(self, device_id):
        with self._cond:
            rec = self._device(device_id)
            rec.last_seq += 1
            return rec.last_seq

    def record_sent(self, instruction):
        with self._cond:
            self.instructions[instruction["id"]] = InstructionRecord(
                instruction["id"], instruction["dev"], instruction["seq"],
                instruction["ops"], instruction["full"], time.time())
            self._event(instruction["dev"], f"instruction {instruction['id']} seq {instruction['seq']} sent")
            self._cond.notify_all()

    def record_ack(self, device_id, ack):
        with self._cond:
            rec = self.instructions.get(ack.get("id"))
            if ack.get("status") == "rejected":
                state = REJECTED
            elif any(r.get("code") in ("failed", "rejected") for r in ack.get("results", [])):
                state = FAILED
            else:
                state = SUCCEEDED
            if rec is not None and rec.device_id == device_id:
                rec.state, rec.ack, rec.acked_at = state, ack, time.time()
            self._event(device_id, f"ack {ack.get('id')}: {ack.get('status')} {ack.get('reason', '')}".rstrip())
            self._cond.notify_all()
            return state

    def record_state(self, device_id, state):
        with self._cond:
            rec = self._device(device_id)
            rec.online = bool(state.get("online"))
            if "profile" in state:
                rec.reported = state["profile"]
                rec.reported_seq = state.get("seq", 0)
            self._event(device_id, "online" if rec.online else "offline")
            self._cond.notify_all()

    def record_needs(self, device_id, report):
        with self._cond:
            self._device(device_id).needs = report
            self._cond.notify_all()

    def record_health(self, device_id, health):
        with self._cond:
            self._device(device_id).health = health
            self._cond.notify_all()

    def wait_until(self, predicate, timeout):
        """Block until predicate(self) is true; returns its last value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(self)
                remaining = deadline - time.monotonic()
                if value or remaining <= 0:
                    return value
                self._cond.wait(min(remaining, 0.5))
