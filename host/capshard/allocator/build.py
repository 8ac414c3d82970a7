"""Turn (catalog, agreement, board, capacity, scores) into a solver Problem.

The part that does not depend on the needs (candidates, slots, dependencies,
conflicts) is computed once per (tier, board) and cached on the catalog."""

from .problem import Problem


class Skeleton:
    """Need-independent structure of the problem for one tier on one board."""

    def __init__(self, catalog, agreement, board, modules=None):
        self.refused = {}   # shard id -> why it can never be chosen here
        self.cache = {}     # the solver's value-independent structure
        candidates = []
        for sid, shard in catalog.shards.items():
            if sid not in agreement.allowed:
                self.refused[sid] = ("test-only shard; the tier is not a test tier" if shard.test_only
                                     else f"not allowed by tier '{agreement.name}'")
            elif board not in shard.boards:
                self.refused[sid] = f"does not run on board '{board}'"
            elif modules is not None and shard.module not in modules:
                self.refused[sid] = f"its code ({shard.module}) is not on the device"
            else:
                candidates.append(sid)
        # Drop shards whose requirements cannot be met here, until nothing changes.
        changed = True
        while changed:
            changed = False
            alive = set(candidates)
            for sid in list(candidates):
                for options in catalog.requirements[sid]:
                    if not alive.intersection(options):
                        missing = " or ".join(options)
                        self.refused[sid] = f"requires {missing}, which is not available here"
                        candidates.remove(sid)
                        changed = True
                        break
        self.ids = candidates
        self.index = {sid: i for i, sid in enumerate(candidates)}
        self.costs = [catalog.shards[sid].cost for sid in candidates]
        self.slot_keys, self.slot_required, self.slot_members = [], [], []
        self.groups = []
        for cap in catalog.capabilities.values():
            positions = []
            for key in cap.slots:
                positions.append(len(self.slot_keys))
                self.slot_keys.append(key)
                self.slot_required.append(catalog.slots[key].required)
                self.slot_members.append([self.index[s] for s in catalog.slots[key].shards
                                          if s in self.index])
            self.groups.append(positions)
        self.slot_pos = {key: pos for pos, key in enumerate(self.slot_keys)}
        self.requires = {}
        for sid, i in self.index.items():
            reqs = [tuple(self.index[o] for o in options if o in self.index)
                    for options in catalog.requirements[sid]]
            if reqs:
                self.requires[i] = reqs
        self.conflicts = frozenset((self.index[a], self.index[b]) for a, b in catalog.conflict_pairs
                                   if a in self.index and b in self.index)

    def problem(self, capacity, utility, forced=(), must_fill=(), bonus=None, exclude=()):
        """utility: value per candidate; bonus: extra objective per candidate
        (stickiness); forced: shard ids; must_fill: slot keys; exclude: shard
        ids not to consider this time."""
        values = list(utility) if not bonus else [u + bonus.get(i, 0.0) for i, u in enumerate(utility)]
        must = {self.slot_pos[k] for k in must_fill}
        members = self.slot_members
        if exclude:
            drop = {self.index[s] for s in exclude}
            members = [[i for i in m if i not in drop] for m in members]
        slots = [(key, self.slot_required[p], p in must, members[p])
                 for p, key in enumerate(self.slot_keys)]
        cache = self.cache.setdefault(frozenset(exclude), {})
        return Problem(self.ids, values, self.costs, slots, self.groups, tuple(capacity),
                       frozenset(self.index[s] for s in forced), self.requires, self.conflicts,
                       utility=list(utility), cache=cache)


def skeleton(catalog, agreement, board, modules=None):
    """``modules``: the shard code modules the device carries (None: any)."""
    key = ("skeleton", agreement.name, agreement.allowed, board, modules)
    sk = catalog._cache.get(key)
    if sk is None:
        sk = catalog._cache[key] = Skeleton(catalog, agreement, board, modules)
    return sk


def depths(catalog):
    """Dependency depth per shard: 0 for shards that require nothing."""
    out = catalog._cache.get("depth")
    if out is None:
        out = {}

        def depth(sid):
            if sid not in out:
                out[sid] = 1 + max((depth(o) for opts in catalog.requirements[sid] for o in opts),
                                   default=-1)
            return out[sid]

        for sid in catalog.shards:
            depth(sid)
        catalog._cache["depth"] = out
    return out
