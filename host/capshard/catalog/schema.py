"""The catalog's and the agreements' data model (immutable once loaded).

Catalog:  boards -> nominal capacities; capabilities -> slots; shards, each in
one slot, with a cost, QoS traits, dependencies, conflicts and boards.
Agreement (a service tier): which shards are allowed, resource caps, the
longest temporary profile, the priority of each need, the baseline profile.
"""

from dataclasses import dataclass, field

from .vocab import PRIORITY_RANK


@dataclass(frozen=True)
class Board:
    name: str
    cpu: int
    mem_kb: int
    bw_kbps: int
    description: str = ""

    @property
    def capacity(self):
        return (self.cpu, self.mem_kb, self.bw_kbps)


@dataclass(frozen=True)
class Slot:
    capability: str
    name: str
    required: bool          # an active capability must fill every required slot
    serves: dict            # need key -> relevance in (0, 1]
    shards: tuple           # shard ids in catalog order
    description: str = ""

    @property
    def key(self):
        return f"{self.capability}.{self.name}"


@dataclass(frozen=True)
class Capability:
    name: str
    slots: tuple            # slot keys in catalog order
    security: bool          # serves the security need
    description: str = ""


@dataclass(frozen=True)
class Shard:
    id: str
    version: str
    slot: str               # "capability.slot"
    module: str
    boards: frozenset
    cpu: int
    mem_kb: int
    bw_kbps: int
    latency_ms: float       # latency the shard adds
    throughput_kbps: int    # the most traffic it can carry
    loss_pct: float         # loss it may introduce
    security: str           # security level it provides
    efficacy: float         # how well it does its job, (0, 1]
    requires: tuple = ()    # shard ids or slot keys (any shard of that slot)
    conflicts: tuple = ()   # shard ids
    test_only: bool = False
    description: str = ""

    @property
    def capability(self):
        return self.slot.split(".", 1)[0]

    @property
    def cost(self):
        return (self.cpu, self.mem_kb, self.bw_kbps)


@dataclass(frozen=True)
class Catalog:
    source: str
    boards: dict            # name -> Board
    capabilities: dict      # name -> Capability
    slots: dict             # "cap.slot" -> Slot
    shards: dict            # id -> Shard
    # derived: shard id -> tuple of requirements, each a tuple of acceptable ids
    requirements: dict = field(default_factory=dict)
    conflict_pairs: frozenset = frozenset()
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def conflicts(self, a, b):
        return (a, b) in self.conflict_pairs


@dataclass(frozen=True)
class Agreement:
    name: str
    source: str
    allowed: frozenset      # shard ids
    cpu: int
    mem_kb: int
    bw_kbps: int
    max_profile_s: int
    priorities: dict        # need key -> "high" | "medium" | "low"
    default_priority: str
    baseline: tuple         # shard ids
    boards: tuple = ()
    test: bool = False
    description: str = ""

    @property
    def caps(self):
        return (self.cpu, self.mem_kb, self.bw_kbps)

    def priority(self, need):
        return self.priorities.get(need, self.default_priority)

    def priority_rank(self, need):
        return PRIORITY_RANK[self.priority(need)]
