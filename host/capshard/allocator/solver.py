"""Solve a Problem fast and close to optimal (pure Python, no I/O).

1. Prune per slot: a plain candidate (no dependencies or conflicts of its own,
   not required by id) is dropped when another one in its slot is worth as
   much for no more of any resource, or, in an optional slot, when it is
   worth nothing.
2. Group per capability: enumerate the capability's complete configurations
   (one option per slot, intra-capability dependencies and conflicts
   respected) and keep the Pareto front (value up, each cost down).
3. Price the resources: Lagrange multipliers for the three capacity
   constraints, by a few subgradient steps.
4. Warm start: the Lagrangian heuristic (best priced options, repaired to
   fit, then filled and upgraded).
5. Depth-first branch and bound over groups, options in order of priced
   value, cut by the Lagrangian bound (and the plain value bound), within a
   node budget; cross-capability requirements are checked at the leaves.
"""

import time

EPS = 1e-9


class _Group:
    __slots__ = ("options", "best", "agg")

    def __init__(self, options):
        options.sort(key=lambda o: -o[0])
        self.options = options
        self.best = options[0][0]


def solve(problem, node_limit=4000, time_limit_s=None):
    """Return (selection as a sorted list of candidate indices, stats dict),
    or (None, stats) when nothing is feasible."""
    cap = problem.capacity
    cross_req, cross_conf, groups = _build_groups(problem)
    stats = {"groups": len(groups), "options": sum(len(g.options) for g in groups), "nodes": 0}
    if any(not g.options for g in groups):
        return None, stats
    conflicts = problem.conflicts

    def cross_ok(members):
        if not cross_req:
            return True
        chosen = set(members)
        for i in members:
            for options in cross_req.get(i, ()):
                if not chosen.intersection(options):
                    return False
        return True

    # Lagrangian relaxation of the three capacity constraints: for the groups
    # left, sum of max(value - lam . cost) + lam . residual bounds what they can add.
    # few groups: the search closes the gap anyway, so spend little on the bound
    small = len(groups) <= 8
    lam = _multipliers(groups, cap, 0.0, rounds=2 if small else 6)
    _price(groups, lam)
    best_value, best_pick = _lagrangian_heuristic(groups, cap, conflicts, cross_ok)
    lam = _multipliers(groups, cap, best_value, rounds=6 if small else 16)
    _price(groups, lam)
    value, pick = _lagrangian_heuristic(groups, cap, conflicts, cross_ok)
    if value > best_value:
        best_value, best_pick = value, pick
    l0, l1, l2 = lam
    t = 1.0
    order = sorted(range(len(groups)), key=lambda g: -groups[g].best)
    glist = []
    lag = []
    for g in order:
        ranked = sorted(((o[0] - t * a, o) for o, a in zip(groups[g].options, groups[g].agg)),
                        key=lambda x: -x[0])
        glist.append(ranked)
        lag.append(ranked[0][0])
    suffix = [0.0] * (len(order) + 1)
    lag_suffix = [0.0] * (len(order) + 1)
    for k in range(len(order) - 1, -1, -1):
        suffix[k] = suffix[k + 1] + groups[order[k]].best
        lag_suffix[k] = lag_suffix[k + 1] + lag[k]
    n = len(glist)
    picked = [None] * n
    state = {"best": best_value, "pick": best_pick, "nodes": 0, "stop": False}
    deadline = time.perf_counter() + time_limit_s if time_limit_s else None
    s0, s1, s2 = lam

    def dfs(k, value, r0, r1, r2, chosen_conf):
        if k == n:
            if value > state["best"] + EPS:
                members = [i for opt in picked for i in opt[4]]
                if cross_ok(members):
                    state["best"], state["pick"] = value, members
            return
        state["nodes"] += 1
        if state["nodes"] > node_limit or (deadline and not state["nodes"] & 127
                                          and time.perf_counter() > deadline):
            state["stop"] = True
            return
        rest = suffix[k + 1]
        base = value + lag_suffix[k + 1] + t * (s0 * r0 + s1 * r1 + s2 * r2)
        for reduced, opt in glist[k]:
            best = state["best"] + EPS
            if base + reduced <= best:
                break
            v = value + opt[0]
            if v + rest <= best:
                continue
            if opt[1] > r0 or opt[2] > r1 or opt[3] > r2:
                continue
            if chosen_conf and opt[5] and any((i, j) in conflicts for i in opt[5] for j in chosen_conf):
                continue
            picked[k] = opt
            dfs(k + 1, v, r0 - opt[1], r1 - opt[2], r2 - opt[3],
                chosen_conf + opt[5] if opt[5] else chosen_conf)
            if state["stop"]:
                return

    dfs(0, 0.0, cap[0], cap[1], cap[2], ())
    stats["nodes"] = state["nodes"]
    stats["complete"] = not state["stop"]
    if state["pick"] is None:
        return None, stats
    return sorted(state["pick"]), stats


class _Structure:
    """What the solver derives from a problem without looking at values:
    constraint roles and every configuration of every capability. Cached
    per (forced, must-fill) when the problem carries a cache."""

    def __init__(self, problem):
        costs, forced = problem.costs, problem.forced
        slot_of = problem.slot_of()
        group_of_slot = {}
        for g, positions in enumerate(problem.groups):
            for pos in positions:
                group_of_slot[pos] = g
        # candidates left out of every slot (excluded this time) play no part
        requires = {i: [tuple(j for j in opts if j in slot_of) for opts in reqs]
                    for i, reqs in problem.requires.items() if i in slot_of}
        conflicts = frozenset((i, j) for i, j in problem.conflicts if i in slot_of and j in slot_of)
        id_referenced, self.slot_referenced = set(), set()
        for i, reqs in requires.items():
            for options in reqs:
                pos = slot_of.get(options[0]) if options else None
                if pos is not None and set(options) == set(problem.slots[pos][3]):
                    self.slot_referenced.add(pos)
                else:
                    id_referenced.update(options)
        in_conflict = {i for i, _ in conflicts}
        self.cross_req, intra_req = {}, {}
        for i, reqs in requires.items():
            gi = group_of_slot[slot_of[i]]
            for options in reqs:
                inside = all(group_of_slot[slot_of[j]] == gi for j in options)
                (intra_req if inside else self.cross_req).setdefault(i, []).append(options)
        self.cross_conf = {i for i, j in conflicts
                           if group_of_slot[slot_of[i]] != group_of_slot[slot_of[j]]}
        self.special = id_referenced | in_conflict | set(requires)
        marked = id_referenced | set(self.cross_req) | self.cross_conf
        ref_slot = {i: -1 - pos for pos in self.slot_referenced for i in problem.slots[pos][3]}
        self.groups = []   # per group: [(members, c0, c1, c2, conflict members, signature)]
        for positions in problem.groups:
            lists = []
            for pos in positions:
                _, required, must_fill, members = problem.slots[pos]
                fixed = [i for i in members if i in forced]
                lists.append(fixed if fixed else
                             list(members) + ([None] if not required and not must_fill else []))
            required_pos = [k for k, pos in enumerate(positions) if problem.slots[pos][1]]
            may_be_off = not any(problem.slots[pos][2] for pos in positions) and \
                not any(i in forced for pos in positions for i in problem.slots[pos][3])
            configs = []
            _enumerate(lists, required_pos, costs, conflicts, intra_req, configs)
            if may_be_off and required_pos:
                configs.append(((), 0, 0, 0))
            # the footprint other groups can see: shards named across groups,
            # and whether a slot some requirement names is filled
            self.groups.append([(m, c0, c1, c2, tuple(i for i in m if i in self.cross_conf),
                                 tuple(i for i in m if i in marked)
                                 + tuple(sorted({ref_slot[i] for i in m if i in ref_slot})))
                                for m, c0, c1, c2 in configs])


def _structure(problem):
    cache = problem.cache
    if cache is None:
        return _Structure(problem)
    key = ("solver", problem.forced, frozenset(p for p, s in enumerate(problem.slots) if s[2]))
    st = cache.get(key)
    if st is None:
        st = cache[key] = _Structure(problem)
    return st


def _build_groups(problem):
    values, costs = problem.values, problem.costs
    st = _structure(problem)
    special = st.special
    # Per slot, candidates that can never be worth choosing: a plain one
    # worth nothing in an optional slot, or one another plain one dominates.
    useless = set()
    for pos, (_, required, must_fill, members) in enumerate(problem.slots):
        kept = []
        for i in sorted(members, key=lambda i: -values[i]):
            if i in special or i in problem.forced:
                continue
            if values[i] <= 0 and not required and not must_fill and pos not in st.slot_referenced:
                useless.add(i)
                continue
            ci = costs[i]
            if any(values[j] >= values[i] and costs[j][0] <= ci[0] and costs[j][1] <= ci[1]
                   and costs[j][2] <= ci[2] for j in kept):
                useless.add(i)
                continue
            kept.append(i)
    groups = []
    for configs in st.groups:
        options = []
        for m, c0, c1, c2, conf, sig in configs:
            if useless.isdisjoint(m):
                options.append((sum(values[i] for i in m), c0, c1, c2, m, conf, sig))
        groups.append(_Group(_pareto(options)))
    return st.cross_req, st.cross_conf, groups


def _enumerate(lists, required_pos, costs, conflicts, intra_req, out):
    """All configurations of one capability: an option per slot list (None =
    empty); complete when any shard is chosen; intra constraints met."""
    if any(not lst for lst in lists):
        return  # a slot that must be filled has no candidate
    partial = [((), 0, 0, 0)]
    for lst in lists:
        grown = []
        for m, c0, c1, c2 in partial:
            for i in lst:
                if i is None:
                    grown.append((m, c0, c1, c2))
                elif not (conflicts and any((i, j) in conflicts for j in m)):
                    c = costs[i]
                    grown.append((m + (i,), c0 + c[0], c1 + c[1], c2 + c[2]))
        partial = grown
    for m, c0, c1, c2 in partial:
        if not m:
            if not required_pos:
                out.append((m, c0, c1, c2))
            continue
        if intra_req:
            chosen = set(m)
            if any(not chosen.intersection(options) for i in m for options in intra_req.get(i, ())):
                continue
        out.append((m, c0, c1, c2))


def _pareto(options):
    """Drop options no better in value and no cheaper in any resource than
    another with the same cross-capability footprint."""
    options.sort(key=lambda o: (-o[0], o[1] + o[2] + o[3]))
    kept = []
    for opt in options:
        o1, o2, o3, sig = opt[1], opt[2], opt[3], opt[6]
        for k in kept:
            if k[1] <= o1 and k[2] <= o2 and k[3] <= o3 and k[6] == sig:
                break
        else:
            kept.append(opt)
    return kept


def _multipliers(groups, cap, known, rounds=16):
    """Lagrange multipliers per resource (value per whole capacity) by
    subgradient steps in capacity-normalised units, Polyak step towards the
    best known value, halving the step when the bound stops improving.
    Returns multipliers per unit of each resource."""
    inv = [1.0 / c if c > 0 else 0.0 for c in cap]
    lam = []
    total_best = sum(g.best for g in groups)
    for d in range(3):
        demand = sum(g.options[0][1 + d] for g in groups) * inv[d]
        lam.append(0.0 if demand <= 1 else total_best / 3.0 * (1 - 1 / demand))
    best_lam, best_bound = list(lam), None
    theta, stale = 1.0, 0
    for _ in range(rounds):
        l0, l1, l2 = lam[0] * inv[0], lam[1] * inv[1], lam[2] * inv[2]
        bound = lam[0] + lam[1] + lam[2]
        u0 = u1 = u2 = 0
        for g in groups:
            top, arg = None, None
            for o in g.options:
                r = o[0] - o[1] * l0 - o[2] * l1 - o[3] * l2
                if top is None or r > top:
                    top, arg = r, o
            bound += top
            u0 += arg[1]
            u1 += arg[2]
            u2 += arg[3]
        if best_bound is None or bound < best_bound - 1e-9:
            best_bound, best_lam, stale = bound, list(lam), 0
        else:
            stale += 1
            if stale >= 2:
                theta, stale = theta / 2, 0
        grad = [(u0 - cap[0]) * inv[0], (u1 - cap[1]) * inv[1], (u2 - cap[2]) * inv[2]]
        grad = [0.0 if lam[d] <= 0 and grad[d] < 0 else grad[d] for d in range(3)]
        norm = sum(x * x for x in grad)
        if norm < 1e-12 or bound - known < 1e-9:
            break
        target = known if known > 0 else 0.9 * bound
        step = theta * (bound - target) / norm
        lam = [max(0.0, lam[d] + step * grad[d]) for d in range(3)]
    return [best_lam[d] * inv[d] for d in range(3)]


def _price(groups, lam):
    l0, l1, l2 = lam
    for g in groups:
        g.agg = [o[1] * l0 + o[2] * l1 + o[3] * l2 for o in g.options]


def _lagrangian_heuristic(groups, cap, conflicts, cross_ok):
    """Start from each group's best option under the multipliers (g.agg holds
    lam . cost), repair capacity by giving up the least value per unit of
    overflowing resource, fill spare capacity by value per unit of priced
    resource, then try single-group upgrades. Returns (value, members) or
    (-1, None)."""
    current = [max(zip(g.options, g.agg), key=lambda x: x[0][0] - x[1]) for g in groups]
    used = [sum(o[1 + d] for o, _ in current) for d in range(3)]

    def clash(o, g):
        if not o[5]:
            return False
        return any((i, j) in conflicts for h, (cur, _) in enumerate(current) if h != g
                   for i in o[5] for j in cur[5])

    def apply(g, pair):
        old = current[g][0]
        o = pair[0]
        for d in range(3):
            used[d] += o[1 + d] - old[1 + d]
        current[g] = pair

    while True:  # repair
        over = [d for d in range(3) if used[d] > cap[d]]
        if not over and not any(clash(cur, g) for g, (cur, _) in enumerate(current)):
            break
        best, move = None, None
        for g, group in enumerate(groups):
            cur = current[g][0]
            conflicted = clash(cur, g)
            for pair in zip(group.options, group.agg):
                o = pair[0]
                if o[1] > cur[1] or o[2] > cur[2] or o[3] > cur[3]:
                    continue  # repair only ever gives resources back
                freed = sum((cur[1 + d] - o[1 + d]) / (cap[d] or 1) for d in over)
                if conflicted and not clash(o, g):
                    freed += 1.0
                if freed <= 0:
                    continue
                ratio = (cur[0] - o[0]) / freed
                if best is None or ratio < best:
                    best, move = ratio, (g, pair)
        if move is None:
            return -1.0, None
        apply(*move)
    if any(used[d] > cap[d] for d in range(3)):
        return -1.0, None
    changed = True
    while changed:  # fill, then single-group upgrades, until nothing helps
        changed = False
        best, move = 0.0, None
        for g, group in enumerate(groups):
            cur, cur_agg = current[g]
            for pair in zip(group.options, group.agg):
                o = pair[0]
                gain = o[0] - cur[0]
                if gain <= EPS:
                    break  # options are sorted by value
                if used[0] - cur[1] + o[1] > cap[0] or used[1] - cur[2] + o[2] > cap[1] \
                        or used[2] - cur[3] + o[3] > cap[2] or clash(o, g):
                    continue
                extra = pair[1] - cur_agg
                ratio = gain / extra if extra > EPS else 1e12 + gain
                if ratio > best:
                    best, move = ratio, (g, pair)
        if move is not None:
            apply(*move)
            changed = True
    members = [i for o, _ in current for i in o[4]]
    if not cross_ok(members):
        return -1.0, None
    return sum(o[0] for o, _ in current), members
