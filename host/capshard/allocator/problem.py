"""The selection problem the solver sees: a multiple-choice multidimensional
knapsack with dependencies, conflicts and capability completeness.

Candidates are indexed 0..n-1. A selection is a set of indices. It is feasible
when: at most one candidate per slot; every forced candidate is in; every
must-fill slot is filled; every capability is complete (a capability with any
shard selected fills all its required slots); every requirement of a selected
shard is met by a selected shard; no two selected shards conflict; the summed
cost fits the capacity in every resource.
"""

from dataclasses import dataclass, field


@dataclass
class Problem:
    ids: list               # candidate index -> shard id
    values: list            # objective value per candidate (float >= 0)
    costs: list             # (cpu, mem_kb, bw_kbps) per candidate
    slots: list             # [(slot key, required, must_fill, [candidate idx])]
    groups: list            # capability -> [slot positions]; one list per capability
    capacity: tuple
    forced: frozenset = frozenset()
    requires: dict = field(default_factory=dict)    # idx -> [tuple of acceptable idx]
    conflicts: frozenset = frozenset()              # {(i, j)} both directions
    utility: list = None    # value to report (objective minus stickiness); defaults to values
    cache: dict = None      # where the solver may keep value-independent structure

    def slot_of(self):
        out = {}
        for pos, (_, _, _, members) in enumerate(self.slots):
            for i in members:
                out[i] = pos
        return out


def violation(problem, selection):
    """Why a selection is infeasible, or None."""
    selection = set(selection)
    by_slot = {}
    slot_of = problem.slot_of()
    for i in selection:
        pos = slot_of.get(i)
        if pos is None:
            return f"{problem.ids[i]} is not a candidate"
        if pos in by_slot:
            return f"slot {problem.slots[pos][0]} has two shards"
        by_slot[pos] = i
    for i in problem.forced:
        if i not in selection:
            return f"forced {problem.ids[i]} is missing"
    for pos, (key, required, must_fill, _) in enumerate(problem.slots):
        if must_fill and pos not in by_slot:
            return f"slot {key} must stay filled"
    for group in problem.groups:
        if any(pos in by_slot for pos in group):
            for pos in group:
                if problem.slots[pos][1] and pos not in by_slot:
                    return f"capability incomplete: {problem.slots[pos][0]} is empty"
    for i in selection:
        for options in problem.requires.get(i, ()):
            if not selection.intersection(options):
                return f"{problem.ids[i]} lacks a requirement"
    for i in selection:
        for j in selection:
            if (i, j) in problem.conflicts:
                return f"{problem.ids[i]} conflicts with {problem.ids[j]}"
    for d in range(3):
        if sum(problem.costs[i][d] for i in selection) > problem.capacity[d]:
            return f"over capacity in resource {d}"
    return None


def utility(problem, selection):
    values = problem.utility if problem.utility is not None else problem.values
    return sum(values[i] for i in selection)
