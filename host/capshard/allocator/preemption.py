"""Preemption, the way the Kubernetes scheduler chooses victims.

A unit (the shards a capability would add in the ideal plan, with what they
require) that does not fit may evict running shards of strictly lower
priority. Among the victim sets that make it fit, take the one whose most
important victim is least important, then the one with fewest victims, then
the one losing least value. Baseline shards are never victims, nor anything
of equal or higher priority, nor anything a protected shard depends on.
Against flapping, a unit only preempts when it is worth clearly more than
what it evicts (by the hysteresis margin).
"""

from itertools import combinations

from .problem import violation

MAX_VICTIM_UNITS = 10


def preempt(problem, selection, ideal, rank, sticky, capability_of, margin=0.0):
    """Return (new selection, [(victim idx, unit idx tuple)]).

    problem: forced = baseline only, no must-fill; selection: the plan that
    keeps running shards; ideal: the best plan ignoring what runs; rank:
    priority rank per idx; sticky: running shard idx eligible as victims."""
    selection = set(selection)
    slot_of = problem.slot_of()
    filled = {slot_of[i] for i in selection}
    units = {}
    for i in ideal:
        if i not in selection and slot_of[i] not in filled:
            units.setdefault(capability_of[i], set()).add(i)
    for cap, members in units.items():
        frontier = list(members)
        while frontier:  # what the unit needs from the ideal plan
            i = frontier.pop()
            for options in problem.requires.get(i, ()):
                if not selection.intersection(options) and not members.intersection(options):
                    for j in options:
                        if j in ideal:
                            members.add(j)
                            frontier.append(j)
    ordered = sorted(units.values(), key=lambda u: (-max(rank[i] for i in u),
                                                    -sum(problem.utility[i] for i in u)))
    evictions = []
    protected = set(problem.forced)
    for unit in ordered:
        if unit & selection:
            continue
        level = max(rank[i] for i in unit)
        trial = selection | unit
        if violation(problem, trial) is None:
            selection = trial
            continue
        victim_units = _victim_units(problem, selection, sticky, protected, rank, level, slot_of)
        choice = _choose(problem, selection, unit, victim_units, rank, margin)
        if choice is None:
            continue
        removed = set().union(*choice) if choice else set()
        selection = (selection - removed) | unit
        protected |= unit
        evictions.extend((v, tuple(sorted(unit))) for v in sorted(removed))
    return sorted(selection), evictions


def _victim_units(problem, selection, sticky, protected, rank, level, slot_of):
    """Sets of shards that can go together: a running shard, the rest of its
    capability when it fills a required slot, and whatever depends on it."""
    units = []
    for v in selection:
        if v not in sticky or v in protected or rank[v] >= level:
            continue
        removed = {v}
        if problem.slots[slot_of[v]][1]:
            group = next(g for g in problem.groups if slot_of[v] in g)
            removed |= {i for i in selection if slot_of[i] in group}
        changed = True
        while changed:
            changed = False
            for i in selection - removed:
                for options in problem.requires.get(i, ()):
                    if not (selection - removed).intersection(options):
                        removed.add(i)
                        changed = True
                        break
        if any(i in protected or i not in sticky or rank[i] >= level for i in removed):
            continue
        frozen = frozenset(removed)
        if frozen not in units:
            units.append(frozen)
    units.sort(key=lambda u: (max(rank[i] for i in u), len(u)))
    return units[:MAX_VICTIM_UNITS]


def _choose(problem, selection, unit, victim_units, rank, margin):
    """The victim set the Kubernetes rule prefers, or None if none works."""
    worth = sum(problem.utility[i] for i in unit)
    candidates = []
    for size in range(1, len(victim_units) + 1):
        for combo in combinations(victim_units, size):
            removed = set().union(*combo)
            lost = sum(problem.utility[i] for i in removed)
            if worth <= lost * (1 + margin):
                continue
            candidates.append((max(rank[i] for i in removed), len(removed),
                               sum(problem.utility[i] for i in removed), combo, removed))
    candidates.sort(key=lambda c: c[:3])
    for *_, combo, removed in candidates:
        if violation(problem, (selection - removed) | unit) is None:
            return combo
    return None
