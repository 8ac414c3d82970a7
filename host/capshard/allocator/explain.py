"""Sentences an operator can read: chosen because..., refused because...,
preempted for..., kept because..., deactivated because...."""

from ..catalog.vocab import RESOURCES, SECURITY
from .scoring import HYSTERESIS, score


def _needs_line(weights):
    parts = []
    for key, (weight, prio, bw, bound, _) in sorted(weights.items.items(), key=lambda kv: -kv[1][0]):
        if key == SECURITY:
            parts.append(f"security {weights.level} ({prio})")
        else:
            parts.append(f"{key} ({prio}, {bw} kbit/s, {bound} ms)")
    return "needs: " + (", ".join(parts) if parts else "none reported")


def _serves(parts):
    return ", ".join(key for _, key in parts[:3])


def explain(catalog, agreement, device, sk, scores, utility, final, capacity, gone, sticky,
            evictions, ops, renew, shrunk, weights, weak):
    words = [_needs_line(weights)]
    baseline = agreement.baseline
    words.append(f"baseline of tier '{agreement.name}': {', '.join(baseline)} (no expiry, never preempted)")
    if shrunk:
        words.append("the running shards no longer fit the device's capacities together, "
                     "so they competed again with everything else")
    chosen = set(final)
    used = [sum(catalog.shards[s].cost[d] for s in chosen) for d in range(3)]
    all_scores = dict(scores)
    missing = [s for s in catalog.shards if s not in all_scores]
    all_scores.update(score(catalog, weights, missing))
    by_slot = {catalog.shards[s].slot: s for s in final}
    required_by = {}
    for s in final:
        for options in catalog.requirements[s]:
            for o in options:
                required_by.setdefault(o, []).append(s)
    for key, slot in catalog.slots.items():
        pick = by_slot.get(key)
        pick_value = all_scores[pick][0] if pick else 0.0
        better = sorted((s for s in slot.shards if s != pick and all_scores[s][0] > pick_value + 1e-9),
                        key=lambda s: -all_scores[s][0])
        if pick is None and not better:
            continue
        if pick in baseline:
            if better:
                words.append(f"{key}: baseline {pick} stays although {better[0]} would serve "
                             f"{_serves(all_scores[better[0]][2])} better")
            continue
        if pick is not None:
            value, prio, parts = all_scores[pick]
            if value <= 0:
                if pick in required_by:
                    why = f"required by {', '.join(sorted(required_by[pick]))}"
                else:
                    why = f"completes capability {slot.capability}"
                words.append(f"{key}: chose {pick} ({prio}) because it is {why}")
            elif pick in sticky and pick in required_by:
                words.append(f"{key}: kept {pick} running ({prio}; serves {_serves(parts)}, "
                             f"value {value:.2f}; required by {', '.join(sorted(required_by[pick]))})")
            elif pick in required_by:
                words.append(f"{key}: chose {pick} ({prio}) for {_serves(parts)} (value {value:.2f}; "
                             f"required by {', '.join(sorted(required_by[pick]))})")
            elif pick in sticky:
                words.append(f"{key}: kept {pick} running ({prio}; serves {_serves(parts)}, "
                             f"value {value:.2f})")
            else:
                words.append(f"{key}: chose {pick} ({prio}) for {_serves(parts)} (value {value:.2f})")
        for s in better[:3]:
            words.append(f"{key}: refused {s} (value {all_scores[s][0]:.2f}): "
                         + (weak[s] if s in weak else
                            _refusal(catalog, sk, s, pick, chosen, used, capacity, sticky,
                                     all_scores[s][0], pick_value)))
    for victim, unit in evictions:
        vid = sk.ids[victim]
        if vid in chosen:
            continue
        names = [sk.ids[i] for i in unit]
        top = max(names, key=lambda s: all_scores[s][0])
        words.append(f"preempted {vid} ({all_scores[vid][1]}) for {', '.join(names)} "
                     f"({all_scores[top][1]}: {_serves(all_scores[top][2])}); "
                     "lower priority gives way when capacity runs out")
    for op in ops:
        sid = op["shard"]
        if op["op"] != "deactivate" or sid in chosen or any(sk.ids[v] == sid for v, _ in evictions):
            continue
        if sid in gone:
            words.append(f"deactivated {sid}: {gone[sid]}")
        elif sid in all_scores and all_scores[sid][0] <= 0:
            words.append(f"deactivated {sid}: no longer needed (no reported need it serves)")
        else:
            words.append(f"deactivated {sid}: replaced by a better choice in {catalog.shards[sid].slot}"
                         if sid in catalog.shards else f"deactivated {sid}")
    if renew:
        words.append(f"renewed the lease of {len(renew)} running shard(s) for "
                     f"{agreement.max_profile_s} s")
    return words


def _refusal(catalog, sk, s, pick, chosen, used, capacity, sticky, value, pick_value):
    if s not in sk.index:
        return sk.refused.get(s, "not available")
    if pick in sticky and value <= pick_value * (1 + HYSTERESIS):
        return (f"only {100 * (value / pick_value - 1):.0f}% better than the running {pick}; "
                f"a change needs more than {100 * HYSTERESIS:.0f}%")
    shard = catalog.shards[s]
    freed = catalog.shards[pick].cost if pick else (0, 0, 0)
    for d, resource in enumerate(RESOURCES):
        free = capacity[d] - used[d] + freed[d]
        if shard.cost[d] > free:
            return f"does not fit: needs {resource} {shard.cost[d]}, {max(free, 0)} free"
    for other in chosen:
        if catalog.conflicts(s, other):
            return f"conflicts with {other}"
    for options in catalog.requirements[s]:
        if not chosen.intersection(options):
            return f"requires {' or '.join(options)}, which would not fit alongside"
    return "the resources it needs buy more value elsewhere in the plan"
