"""The seed's pseudocode (capability-sharding.md, "Pseudocode - DSA"),
implemented faithfully as the baseline to beat:

    for shard in requiredShards:
        if shard in availableShards: allocate it
        else:
            alternativeShard = findAlternativeShard(shard, serviceAgreement)
            if alternativeShard: allocate it
            else: prioritizedShard = prioritizeShards(allocatedProfile); remove it

On a solver Problem (candidates already filtered by tier and board):
requiredShards is, for every slot worth something (most valuable first), its
most valuable candidate, and, once a shard is taken, the most valuable
candidate of each slot its capability requires and of each dependency.
"Available" means it fits what is left and conflicts with nothing taken (the
seed: unavailable "due to resource constraints or agreement limits"). The
alternative is the most valuable candidate of the same slot that is
available. prioritizeShards drops the least valuable shard taken so far.
No look-ahead, no retry: the seed's loop, nothing more.
"""


def naive_solve(problem):
    values, costs, cap = problem.values, problem.costs, problem.capacity
    slot_of = problem.slot_of()
    group_of = {pos: g for g, positions in enumerate(problem.groups) for pos in positions}
    taken = list(problem.forced)
    used = [sum(costs[i][d] for i in taken) for d in range(3)]

    def best(members):
        return max(members, key=lambda i: values[i]) if members else None

    slots = [pos for pos, s in enumerate(problem.slots) if s[3] and max(values[i] for i in s[3]) > 0]
    slots.sort(key=lambda pos: -max(values[i] for i in problem.slots[pos][3]))
    required = [best(problem.slots[pos][3]) for pos in slots]
    requested = set(required)

    def request(i):  # each shard is asked for once, as in the seed's single pass
        if i is not None and i not in requested:
            requested.add(i)
            required.append(i)

    def available(i):
        return (all(slot_of[j] != slot_of[i] for j in taken)
                and all(used[d] + costs[i][d] <= cap[d] for d in range(3))
                and not any((i, j) in problem.conflicts for j in taken))

    def take(i):
        taken.append(i)
        for d in range(3):
            used[d] += costs[i][d]
        for pos in problem.groups[group_of[slot_of[i]]]:
            if problem.slots[pos][1] and pos != slot_of[i]:
                request(best(problem.slots[pos][3]))
        for options in problem.requires.get(i, ()):
            request(best(list(options)))

    k = 0
    while k < len(required):
        i = required[k]
        k += 1
        if i is None or i in taken:
            continue
        if available(i):
            take(i)
            continue
        alternatives = [j for j in problem.slots[slot_of[i]][3] if available(j)]
        if alternatives:
            take(best(alternatives))
            continue
        removable = [j for j in taken if j not in problem.forced]
        if removable:
            victim = min(removable, key=lambda j: values[j])
            taken.remove(victim)
            for d in range(3):
                used[d] -= costs[victim][d]
    return sorted(taken)


def repair(problem, selection):
    """What a device would end up running from a naive plan: shards whose
    capability is incomplete or whose dependencies are missing are refused,
    until what is left is consistent."""
    kept = set(selection)
    slot_of = problem.slot_of()
    changed = True
    while changed:
        changed = False
        filled = {slot_of[i] for i in kept}
        for i in sorted(kept):
            if i in problem.forced:
                continue
            group = next(g for g in problem.groups if slot_of[i] in g)
            incomplete = any(problem.slots[p][1] and p not in filled for p in group)
            unmet = any(not kept.intersection(o) for o in problem.requires.get(i, ()))
            if incomplete or unmet:
                kept.discard(i)
                changed = True
                break
    return sorted(kept)
