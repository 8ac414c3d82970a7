"""How well each shard meets the needs: value and priority per shard.

value(shard) = sum over the needs its slot serves of
    need weight x slot relevance x fit(shard traits, need)
need weight   = priority weight x confidence x (1 + log10(1 + bw/100))   for a class,
                priority weight x level weight x (1 + log10(1 + #dests))  for security;
fit           = efficacy x throughput fit x latency fit x loss fit, each in [0, 1];
                for security, 0 when the shard protects traffic below the needed level.
A shard's priority is the highest priority among the needs it helps.
"""

import math

from ..catalog.vocab import CLASS_PROFILE, PRIORITY_RANK, SECURITY, SECURITY_RANK

HYSTERESIS = 0.15   # a running shard gives way only to one worth more than 15 % more
PRIORITY_WEIGHT = {"high": 6.0, "medium": 3.0, "low": 1.0}
LEVEL_WEIGHT = {"integrity": 1.0, "confidentiality": 1.5}
DEFAULT_SECURITY_LATENCY_MS = 1000


class NeedWeights:
    """The needs as scoring sees them: key -> (weight, priority, bw, latency bound, loss tolerance)."""

    def __init__(self, needs, agreement):
        self.items = {}
        total_bw, tightest = 0, DEFAULT_SECURITY_LATENCY_MS
        for name, need in needs.classes.items():
            bound, loss = CLASS_PROFILE[name]
            if need.lat_ms:
                bound = need.lat_ms
            prio = agreement.priority(name)
            weight = PRIORITY_WEIGHT[prio] * need.conf / 100.0 * (1 + math.log10(1 + need.bw_kbps / 100.0))
            total_bw += need.bw_kbps
            tightest = min(tightest, bound)
            if weight > 0:
                self.items[name] = (weight, prio, need.bw_kbps, bound, loss)
        if needs.security != "none":
            prio = agreement.priority(SECURITY)
            weight = PRIORITY_WEIGHT[prio] * LEVEL_WEIGHT[needs.security] * (1 + math.log10(1 + len(needs.dests)))
            self.items[SECURITY] = (weight, prio, total_bw, tightest, 1.0)
        self.level = needs.security


def fit(shard, need_key, bw, bound, loss_tol, level):
    if need_key == SECURITY and shard.security != "none" and SECURITY_RANK[shard.security] < SECURITY_RANK[level]:
        return 0.0
    f = shard.efficacy
    if bw > shard.throughput_kbps:
        f *= shard.throughput_kbps / bw
    if shard.latency_ms:
        f *= max(0.0, 1.0 - shard.latency_ms / bound)
    if shard.loss_pct > loss_tol:
        f *= loss_tol / shard.loss_pct
    return f


def score(catalog, weights, shard_ids):
    """{shard id: (value, priority, [(contribution, need key), ...] best first)}."""
    out = {}
    items = weights.items
    for shard_id in shard_ids:
        shard = catalog.shards[shard_id]
        serves = catalog.slots[shard.slot].serves
        value, prio, parts = 0.0, None, []
        for key, relevance in serves.items():
            item = items.get(key)
            if item is None:
                continue
            weight, need_prio, bw, bound, loss = item
            part = weight * relevance * fit(shard, key, bw, bound, loss, weights.level)
            if part > 0:
                value += part
                parts.append((part, key))
                if prio is None or PRIORITY_RANK[need_prio] > PRIORITY_RANK[prio]:
                    prio = need_prio
        parts.sort(reverse=True)
        out[shard_id] = (value, prio or "low", parts)
    return out
