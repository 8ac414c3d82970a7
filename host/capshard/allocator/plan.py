"""Plans: the profile a device should run, the operations that get it there
from what it runs now, and the words that explain why."""

import json
from dataclasses import dataclass, field

OP_FIELDS = ("op", "shard", "ver", "slot", "cpu", "mem_kb", "bw_kbps", "prio", "dur_s", "alt", "module",
             "alt_module")
# fields whose change is a budget adjustment rather than a different shard
BUDGET_FIELDS = ("cpu", "mem_kb", "bw_kbps", "prio", "alt", "alt_module")


def op_dict(op, shard, prio, dur_s, alt):
    """The instruction wire form of one operation on a catalog shard."""
    return {"op": op, "shard": shard.id, "ver": shard.version, "slot": shard.slot,
            "cpu": max(1, min(100, shard.cpu)), "mem_kb": shard.mem_kb, "bw_kbps": shard.bw_kbps,
            "prio": prio, "dur_s": int(dur_s), "alt": alt, "module": shard.module}


@dataclass
class Plan:
    tier: str
    board: str
    created_at: float
    expires_at: object              # wall seconds, None when only the baseline runs
    profile: dict                   # shard id -> op-dict (as it will run)
    operations: list                # op-dicts in the order the device applies them
    explanations: list              # readable sentences
    utility: float = 0.0            # value of the dynamic shards for the needs
    preempted: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def to_dict(self):
        return {"tier": self.tier, "board": self.board, "created_at": self.created_at,
                "expires_at": self.expires_at, "utility": round(self.utility, 4),
                "profile": self.profile, "operations": self.operations,
                "preempted": self.preempted, "explanations": self.explanations}

    def to_json(self, indent=None):
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    def render(self):
        """A text view for operators."""
        lines = [f"plan for a device on board '{self.board}', tier '{self.tier}'"]
        if self.expires_at is None:
            lines.append("profile: baseline only (no expiry)")
        else:
            lines.append(f"profile expires in {int(round(self.expires_at - self.created_at))} s "
                         f"(utility {self.utility:.2f})")
        lines.append("profile:")
        for sid in sorted(self.profile, key=lambda s: self.profile[s]["slot"]):
            o = self.profile[sid]
            lines.append(f"  {o['slot']:<28} {sid:<20} prio={o['prio']:<6} cpu={o['cpu']:<3} "
                         f"mem_kb={o['mem_kb']:<5} bw_kbps={o['bw_kbps']:<5} "
                         f"dur_s={o['dur_s']:<5} alt={o['alt'] or '-'}")
        lines.append("operations:" if self.operations else "operations: none")
        for o in self.operations:
            lines.append(f"  {o['op']:<10} {o['shard']:<20} {o['slot']:<28} prio={o['prio']} dur_s={o['dur_s']}")
        lines.append("why:")
        lines.extend(f"  - {e}" for e in self.explanations)
        return "\n".join(lines)


def diff(current, profile, renew_ids, depth):
    """Operations that turn `current` into `profile`: deactivations first
    (dependents before what they depend on), then budget adjustments, then
    activations (dependencies first)."""
    deactivate, adjust, activate = [], [], []
    for sid, running in current.items():
        target = profile.get(sid)
        if target is None or running.get("ver") != target["ver"] \
                or running.get("module") != target["module"]:
            off = {k: running.get(k) for k in OP_FIELDS}
            off.update(op="deactivate", shard=sid)
            deactivate.append(off)
    for sid, target in profile.items():
        running = current.get(sid)
        if running is None or running.get("ver") != target["ver"] \
                or running.get("module") != target["module"]:
            activate.append(dict(target, op="activate"))
        elif sid in renew_ids or any(running.get(k) != target[k] for k in BUDGET_FIELDS):
            adjust.append(dict(target, op="adjust"))
    deactivate.sort(key=lambda o: (-depth.get(o["shard"], 0), o["shard"]))
    adjust.sort(key=lambda o: o["shard"])
    activate.sort(key=lambda o: (depth.get(o["shard"], 0), o["shard"]))
    return deactivate + adjust + activate
