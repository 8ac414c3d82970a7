"""The fleet as the service sees it: the store plus an event log and waiters.

Every change goes to the store (SQLite or PostgreSQL) and is announced to
threads waiting in ``wait_until`` (tests, the demo). The ``devices``,
``instructions``, ``events`` and ``errors`` views are read from the store, so
they show what other provider processes sharing the store did as well.
"""

import threading
import time
from dataclasses import dataclass, field

from .store import (FAILED, IN_PROGRESS, INSTRUCTION_STATES, OPEN_STATES, QUEUED, REJECTED,  # noqa: F401
                    SUCCEEDED, TIMED_OUT, open_store)

# Fields that say what a shard runs with. The "op" verb (activate/adjust) and
# the lease countdown (dur_s, re-based at every full send) are not part of it.
PROFILE_FIELDS = ("ver", "slot", "module", "cpu", "mem_kb", "bw_kbps", "prio", "alt")


def profiles_match(desired, reported):
    """Does the device run what we want (same shards, same settings)?"""
    if desired.keys() != (reported or {}).keys():
        return False
    for sid, want in desired.items():
        # field by field in C (map), not a generator: twice per report per shard
        if tuple(map(want.get, PROFILE_FIELDS)) != tuple(map(reported[sid].get, PROFILE_FIELDS)):
            return False
    return True


def ack_outcome(ack):
    """Instruction state from a device's ack."""
    if ack.get("status") == "rejected":
        return REJECTED
    if any(r.get("code") in ("failed", "rejected") for r in ack.get("results") or []):
        return FAILED
    return SUCCEEDED


@dataclass
class DeviceRecord:
    device_id: str
    online: bool = False
    birth: dict | None = None
    desired: dict = field(default_factory=dict)  # shard id -> op
    desired_version: int = 0
    desired_expires_at: float | None = None
    reported: dict = field(default_factory=dict)
    reported_seq: int = 0
    last_seq: int = 0
    needs: dict | None = None
    health: dict | None = None
    tier: str | None = None
    last_seen: float | None = None
    pending: int = 0

    @classmethod
    def from_row(cls, r):
        return cls(r["device_id"], bool(r["online"]), r["birth"], r["desired"] or {}, r["desired_version"],
                   r["desired_expires_at"], r["reported"] or {}, r["reported_seq"], r["inst_seq"],
                   r["needs"], r.get("health"), r.get("tier"), r["last_seen"], r["pending"])

    @property
    def converged(self):
        return profiles_match(self.desired, self.reported)


@dataclass
class InstructionRecord:
    id: str
    device_id: str
    seq: int
    ops: list
    full: bool
    sent_at: float | None
    state: str
    ack: dict | None
    acked_at: float | None
    attempts: int
    created_at: float
    reason: str | None
    tier: str | None
    desired_version: int

    @classmethod
    def from_row(cls, r):
        return cls(r["id"], r["device_id"], r["seq"], r["ops"], bool(r["full_state"]), r["sent_at"], r["state"],
                   r["ack"], r["acked_at"], r["attempts"], r["created_at"], r["reason"], r["tier"],
                   r["desired_version"])


class Fleet:
    def __init__(self, store=None):
        self.store = store if store is not None else open_store(":memory:")
        self._cond = threading.Condition()

    # ---- views (read from the store) -------------------------------------------
    @property
    def devices(self):
        return {r["device_id"]: DeviceRecord.from_row(r) for r in self.store.list_devices()}

    def device(self, device_id):
        row = self.store.get_device(device_id)
        return DeviceRecord.from_row(row) if row else None

    @property
    def instructions(self):
        return {r["id"]: InstructionRecord.from_row(r) for r in self.store.instructions()}

    def instructions_of(self, device_id):
        return [InstructionRecord.from_row(r) for r in self.store.instructions(device_id)]

    @property
    def events(self):
        """(time, device id, text) of everything but errors, oldest first."""
        return [(e["t"], e["device_id"], e["text"]) for e in self.store.events() if e["kind"] != "error"]

    @property
    def errors(self):
        return [(e["t"], e["text"]) for e in self.store.events(kinds=["error"])]

    # ---- changes -----------------------------------------------------------
    def notify(self):
        if self.store.in_transaction():
            # Waiters read the store while holding the condition: waking them
            # from inside a transaction could deadlock. The batch's owner
            # notifies once it committed.
            return
        with self._cond:
            self._cond.notify_all()

    def event(self, device_id, kind, text):
        self.store.add_event(device_id, kind, text, time.time())
        self.notify()

    def record_error(self, text):
        self.event(None, "error", text)

    def record_birth(self, device_id, birth):
        self.store.record_birth(device_id, birth, time.time())
        self.event(device_id, "birth", f"birth: board {birth.get('board')} on {birth.get('runtime')}")

    def record_ack(self, device_id, ack):
        state = ack_outcome(ack)
        before = self.store.finish(ack.get("id"), state, time.time(), ack.get("reason") or "", ack, device_id) \
            if ack.get("id") else None
        self.event(device_id, "ack", f"ack {ack.get('id')}: {ack.get('status')} {ack.get('reason', '')}".rstrip())
        return state, before

    def record_state(self, device_id, state):
        return self.record_state_birth(device_id, state)[0]

    def record_state_birth(self, device_id, state):
        """(online, birth): birth is store.birth_of's answer when recording
        the reported profile gave it for free, else None."""
        now = time.time()
        online = bool(state.get("online"))
        birth = None
        if "profile" in state and online:
            birth = self.store.record_reported(device_id, state["profile"], state.get("seq", 0), now)
        else:
            self.store.set_online(device_id, online, now)
        self.event(device_id, "online" if online else "offline", "online" if online else "offline")
        return online, birth

    def record_needs(self, device_id, report):
        old = self.store.record_needs(device_id, report, time.time())
        self.notify()
        return old

    def record_health(self, device_id, health):
        self.store.record_health(device_id, health, time.time())
        self.notify()

    def wait_until(self, predicate, timeout):
        """Block until predicate(self) is true; returns its last value. Wakes on
        this process's changes, and polls for other processes' ones."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(self)
                remaining = deadline - time.monotonic()
                if value or remaining <= 0:
                    return value
                self._cond.wait(min(remaining, 0.2))
