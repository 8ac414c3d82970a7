"""allocate(): needs -> filter -> score -> solve -> preempt -> profile -> diff.

A pure function of (catalog, agreement, device, needs, now, previous): no I/O,
no clock, inputs never mutated.
"""

import math

from ..catalog.errors import CatalogError, DeviceError, NeedsError
from ..catalog.loader import baseline_problem
from ..catalog.vocab import PRIORITY_RANK, SECURITY_RANK
from . import explain
from .build import depths, skeleton
from .needs import DeviceState, Needs
from .plan import Plan, diff, op_dict
from .preemption import preempt
from .scoring import HYSTERESIS, NeedWeights, score
from .solver import solve

RENEW_FRACTION = 1 / 3   # renew the lease when less than this share of it is left
BASELINE_PRIO = "high"


def _check_inputs(catalog, agreement, device, needs):
    if not isinstance(needs, Needs):
        raise NeedsError("needs", None, None, "build needs with Needs.from_report(report)")
    if not isinstance(device, DeviceState):
        device = DeviceState.from_dict(device)
    device.check("device", catalog)
    problem = baseline_problem(catalog, agreement, device.board, device.capacity)
    if problem:
        raise CatalogError(agreement.source, f"tier '{agreement.name}'", "baseline", problem)
    return device


def baseline_plan(catalog, agreement, device, now=0.0):
    """The tier's baseline profile as a plan (used when a device is born):
    baseline shards get dur_s 0 and are never preempted."""
    if not isinstance(device, DeviceState):
        device = DeviceState.from_dict(device)
    device.check("device", catalog)
    problem = baseline_problem(catalog, agreement, device.board, device.capacity)
    if problem:
        raise CatalogError(agreement.source, f"tier '{agreement.name}'", "baseline", problem)
    profile = _profile(catalog, agreement, device, agreement.baseline, {}, None, {}, ())
    ops = diff(device.current, profile, (), depths(catalog))
    words = [f"baseline of tier '{agreement.name}': " + ", ".join(agreement.baseline)
             + " (no expiry; never preempted)"]
    words += [f"deactivated {o['shard']}: not in the baseline" for o in ops if o["op"] == "deactivate"]
    return Plan(agreement.name, device.board, now, None, profile, ops, words)


def allocate(catalog, agreement, device, needs, now, previous=None, cache=None):
    """Decide the device's profile for these needs; return a Plan.

    ``cache`` (a ChoiceCache, optional) remembers the choice of shards -- the
    costly, clock-free part -- per (tier, board, capacities, modules, running
    profile, needs); the lease, operations and explanations are worked out
    anew each time, so a cached choice gives the same Plan as a fresh one."""
    device = _check_inputs(catalog, agreement, device, needs)
    key = choice_key(agreement, device, needs) if cache is not None else None
    choice = cache.get(key) if cache is not None else None
    if choice is None:
        choice = _choose(catalog, agreement, device, needs)
        if cache is not None:
            cache.put(key, choice)
    (sk, scores, utility, weak, gone, sticky, selection, evictions, shrunk, stats, weights) = choice
    stats = dict(stats)
    baseline = set(agreement.baseline)
    capacity = tuple(min(a, b) for a, b in zip(device.capacity, agreement.caps))
    final = [sk.ids[i] for i in selection]
    dynamic = [sid for sid in final if sid not in baseline]
    preempted = [sk.ids[v] for v, _ in evictions if sk.ids[v] not in final]
    return _finish(catalog, agreement, device, now, previous, sk, scores, utility, weak, gone, sticky,
                   selection, evictions, shrunk, stats, weights, capacity, baseline, final, dynamic, preempted)


def choice_key(agreement, device, needs):
    """What the choice of shards depends on. The running profile counts
    without its lease countdown (``dur_s``), and the needs without the
    device id and report number, so devices alike share one entry."""
    # In their own order: iteration order decides ties and the order of the words.
    running = tuple((sid, tuple((k, v) for k, v in op.items() if k != "dur_s"))
                    for sid, op in device.current.items())
    wants = (tuple(needs.classes.items()), needs.security, tuple(needs.dests))
    return (id(agreement), agreement.name, device.board, tuple(device.capacity), device.modules, running, wants)


class ChoiceCache:
    """A bounded LRU of allocation choices (see allocate)."""

    def __init__(self, size=4096):
        from collections import OrderedDict
        self.size, self.entries = size, OrderedDict()
        self.hits = self.misses = 0

    def get(self, key):
        try:
            value = self.entries[key]
        except (KeyError, TypeError):
            self.misses += 1
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key, value):
        try:
            self.entries[key] = value
        except TypeError:
            return  # an unhashable input: not cached
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)


def _choose(catalog, agreement, device, needs):
    """The choice of shards: pure in its inputs, no clock."""
    sk = skeleton(catalog, agreement, device.board, device.modules)
    capacity = tuple(min(a, b) for a, b in zip(device.capacity, agreement.caps))
    weights = NeedWeights(needs, agreement)
    scores = score(catalog, weights, sk.ids)
    utility = [scores[sid][0] for sid in sk.ids]
    baseline = set(agreement.baseline)
    for sid in sorted(baseline):
        if sid not in sk.index:
            raise DeviceError("device", f"baseline shard '{sid}'", None,
                              f"cannot run on this device: {sk.refused.get(sid, 'not a candidate')}")
        utility[sk.index[sid]] = 0.0   # always there: not part of what the plan wins
    rank = [PRIORITY_RANK[scores[sid][1]] for sid in sk.ids]
    weak = _under_protecting(catalog, sk, needs)

    # Running shards: which stay candidates, which keep their slot (stickiness).
    gone, sticky = {}, {}
    for sid in device.current:
        if sid in baseline:
            continue
        if sid not in catalog.shards:
            gone[sid] = "no longer in the catalog"
        elif sid not in sk.index:
            gone[sid] = sk.refused.get(sid, "not available")
        elif sid in weak:
            gone[sid] = weak[sid]
        elif utility[sk.index[sid]] > 0:
            sticky[sid] = sk.index[sid]
    bonus = {i: HYSTERESIS * utility[i] for i in sticky.values()}
    must = {catalog.shards[sid].slot for sid in sticky}
    stats = {}
    kept_problem = sk.problem(capacity, utility, agreement.baseline, must, bonus, weak)
    selection, stats["solve"] = solve(kept_problem)
    shrunk = selection is None
    if shrunk:  # the running shards no longer fit together: let them compete
        selection, stats["solve"] = solve(sk.problem(capacity, utility, agreement.baseline, (), bonus, weak))
    evictions = []
    if sticky and not shrunk:
        free_problem = sk.problem(capacity, utility, agreement.baseline, exclude=weak)
        ideal, stats["ideal"] = solve(free_problem)
        gain = sum(utility[i] for i in ideal) - sum(utility[i] for i in selection)
        if gain > 1e-6:
            capability_of = [catalog.shards[sid].capability for sid in sk.ids]
            selection, evictions = preempt(free_problem, selection, ideal, rank,
                                           set(sticky.values()), capability_of, HYSTERESIS)
            if evictions:  # fill what the evictions left free, keeping every choice made
                chosen = [sk.ids[i] for i in selection]
                refill, _ = solve(sk.problem(capacity, utility, chosen, (), bonus, weak))
                selection = refill or selection
    return (sk, scores, utility, weak, gone, sticky, selection, evictions, shrunk, stats, weights)


def _finish(catalog, agreement, device, now, previous, sk, scores, utility, weak, gone, sticky, selection,
            evictions, shrunk, stats, weights, capacity, baseline, final, dynamic, preempted):
    # Lease: one expiry for the whole dynamic profile, renewed when it runs low.
    prev_expiry = _expiry(previous)
    renew = ()
    if not dynamic:
        expires_at, dur = None, 0
    elif prev_expiry is None or prev_expiry - now < agreement.max_profile_s * RENEW_FRACTION \
            or prev_expiry - now > agreement.max_profile_s:
        expires_at, dur = now + agreement.max_profile_s, agreement.max_profile_s
        renew = {sid for sid in dynamic if sid in device.current}
    else:
        expires_at, dur = prev_expiry, int(math.ceil(prev_expiry - now))
        # shards kept from the running profile keep their lease
    prios = {sid: scores[sid][1] for sid in dynamic}
    for sid in dynamic:  # a shard pulled in as a dependency runs at its dependents' priority
        for other in dynamic:
            if any(sid in opts for opts in catalog.requirements[other]) and \
                    PRIORITY_RANK[prios[other]] > PRIORITY_RANK[prios[sid]]:
                prios[sid] = prios[other]
    alts = _alternates(catalog, sk, selection, capacity, utility, device.current)
    profile = _profile(catalog, agreement, device, final, prios, dur, alts, dynamic)
    for sid in dynamic:  # kept shards keep their lease unless it is renewed
        running = device.current.get(sid)
        if running is not None and sid not in renew and running.get("ver") == profile[sid]["ver"]:
            profile[sid]["dur_s"] = running.get("dur_s", dur)
    ops = diff(device.current, profile, renew, depths(catalog))
    words = explain.explain(catalog, agreement, device, sk, scores, utility, final, capacity,
                            gone, sticky, evictions, ops, renew, shrunk, weights, weak)
    value = sum(utility[sk.index[sid]] for sid in dynamic)
    return Plan(agreement.name, device.board, now, expires_at, profile, ops, words, value,
                preempted, stats)


def _under_protecting(catalog, sk, needs):
    """Shards that protect traffic, in a capability serving security, below
    the level the needs ask for: never chosen while that need stands (a VPN
    with a null cipher must not pass for confidentiality)."""
    if needs.security == "none":
        return {}
    need = SECURITY_RANK[needs.security]
    out = {}
    for sid in sk.ids:
        shard = catalog.shards[sid]
        if shard.security != "none" and SECURITY_RANK[shard.security] < need \
                and catalog.capabilities[shard.capability].security:
            out[sid] = f"protects to '{shard.security}' only; the need is '{needs.security}'"
    return out


def _expiry(previous):
    if previous is None:
        return None
    if isinstance(previous, dict):
        return previous.get("expires_at")
    return previous.expires_at


def _profile(catalog, agreement, device, final, prios, dur, alts, dynamic):
    profile = {}
    dynamic = set(dynamic)
    for sid in final:
        shard = catalog.shards[sid]
        if sid in dynamic:
            profile[sid] = op_dict("activate", shard, prios[sid], dur, alts.get(sid))
        else:
            profile[sid] = op_dict("activate", shard, BASELINE_PRIO, 0, alts.get(sid))
        alt = profile[sid]["alt"]
        # the device needs the alternate's code module to fail over to it
        profile[sid]["alt_module"] = catalog.shards[alt].module if alt else None
    return profile


def _alternates(catalog, sk, selection, capacity, utility, current):
    """Per chosen shard, the best other candidate of its slot that could take
    its place within the plan (capacity, dependencies, conflicts): the
    device's failover target."""
    chosen = set(selection)
    used = [sum(sk.costs[i][d] for i in chosen) for d in range(3)]
    out = {}
    for i in selection:
        slot = sk.slot_pos[catalog.shards[sk.ids[i]].slot]
        others = chosen - {i}
        best = None
        running_alt = sk.index.get((current.get(sk.ids[i]) or {}).get("alt"))
        # the running alternate first, so small changes in needs do not churn it
        members = sk.slot_members[slot]
        if running_alt in members and running_alt != i and \
                not any((running_alt, k) in sk.conflicts for k in others):
            # Keep the running alternate while it is still a candidate: the
            # device checks the budget again when it fails over, and
            # re-picking it on every small change in needs is churn.
            out[sk.ids[i]] = sk.ids[running_alt]
            continue
        for j in members:
            if j == i or (best is not None and utility[j] <= utility[best]):
                continue
            if any(used[d] - sk.costs[i][d] + sk.costs[j][d] > capacity[d] for d in range(3)):
                continue
            if any((j, k) in sk.conflicts for k in others):
                continue
            trial = others | {j}
            if any(not trial.intersection(opts) for k in trial for opts in sk.requires.get(k, ())):
                continue
            best = j
        out[sk.ids[i]] = sk.ids[best] if best is not None else None
    return out
