"""Pure pieces of reconciliation: options, retry backoff, the rate limiter,
when needs changed enough to re-plan, and the full-state operations."""

import math
import random
import time
from dataclasses import dataclass


@dataclass
class ReconcileOptions:
    ttl_s: int = 60               # an instruction not acked by then is TIMED_OUT
    retry_base_s: float = 1.0     # first retry after about this long, doubling
    retry_max_s: float = 15.0
    rate_per_s: float = 20.0      # instructions sent per second (new and retries)
    burst: int = 10
    birth_jitter_s: float = 0.25  # births are spread over this window (reconnect storms)
    replan_delay_s: float = 0.1   # coalesce needs reports that arrive together
    check_delay_s: float = 0.5    # after an ack or a state: compare reported with desired
    renew_before_s: float = 10.0  # re-plan this long before a temporary profile lapses (< 0: after)
    in_flight_wait_s: float = 0.2
    tick_s: float = 0.05
    bw_change: float = 0.25       # relative bandwidth change that counts as new needs


def backoff(attempt, opts, rng=random):
    """Delay before retry number ``attempt`` (1, 2, ...): exponential, capped,
    with half of it jittered so retries of many devices do not line up."""
    d = min(opts.retry_max_s, opts.retry_base_s * (2 ** max(0, attempt - 1)))
    return d / 2 + rng.uniform(0, d / 2)


class TokenBucket:
    """At most ``rate`` per second on average, ``burst`` at once."""

    def __init__(self, rate, burst, clock=time.monotonic):
        self.rate, self.burst, self.clock = float(rate), float(burst), clock
        self.tokens, self.stamp = float(burst), clock()

    def take(self):
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def available(self):
        """Whole tokens there now (without taking them)."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return int(self.tokens)

    def spend(self, n):
        self.tokens -= n


def needs_changed(old, new, bw_change=0.25):
    """Enough difference between two QoS reports to run the allocator again:
    a class appears or goes, security changes, or a class's bandwidth or
    latency bound moves by more than ``bw_change``."""
    if old is None:
        return True
    oc, nc = old.get("classes") or {}, new.get("classes") or {}
    if set(oc) != set(nc):
        return True
    if (old.get("security") or {}).get("level") != (new.get("security") or {}).get("level"):
        return True
    for name, n in nc.items():
        o = oc[name]
        ob, nb = o.get("bw_kbps") or 0, n.get("bw_kbps") or 0
        if abs(nb - ob) > bw_change * max(ob, 1):
            return True
        if o.get("lat_ms") != n.get("lat_ms"):
            return True
    return False


def full_state_ops(desired, expires_at, now):
    """The whole desired profile as activate operations; a temporary shard's
    lease counts from receipt, so it is re-based to what is left of it."""
    ops = []
    for sid in sorted(desired):
        op = dict(desired[sid], op="activate", shard=sid)
        if op.get("dur_s") and expires_at is not None:
            op["dur_s"] = max(1, int(math.ceil(expires_at - now)))
        ops.append(op)
    return ops
