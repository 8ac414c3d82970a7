"""What a device should run. A policy turns a device record (birth, reported
profile, needs) and its tier into a Decision; the reconciler stores it as the
desired profile and sends what it takes to get there.

- StaticPolicy: a fixed profile from a function (tests, the first demo).
- AllocatorPolicy: the Dynamic Shard Allocator over the catalog and the tiers.
"""

import math
from dataclasses import dataclass, field

MINIMAL_BASELINE = [{
    "op": "activate", "shard": "null-cipher", "ver": "1.0.0", "slot": "vpn.cipher",
    "module": "capdev.shards.null_cipher", "cpu": 10, "mem_kb": 4, "bw_kbps": 0,
    "prio": "high", "dur_s": 0, "alt": None,
}]

# Board names devices announce that the catalog knows under another name.
DEFAULT_BOARD_ALIASES = {"simulated": "sim"}


def minimal_baseline(device_id, birth):
    return [dict(op) for op in MINIMAL_BASELINE]


class PolicyError(ValueError):
    """No decision can be made for this device; the text says why."""


@dataclass
class Decision:
    profile: dict                 # shard id -> op dict, as it should run
    operations: list              # ops from the reported profile to `profile`
    expires_at: float | None      # when the temporary part lapses (None: never)
    explanations: list = field(default_factory=list)
    preempted: list = field(default_factory=list)
    tier: str | None = None


def simple_diff(current, profile):
    """Deactivate what is not wanted, activate what is new or different."""
    ops = [{"op": "deactivate", "shard": sid} for sid in sorted(current) if sid not in profile]
    for sid in sorted(profile):
        if current.get(sid) is None or any(current[sid].get(k) != v for k, v in profile[sid].items()
                                           if k not in ("op", "dur_s")):
            ops.append(dict(profile[sid], op="activate"))
    return ops


class StaticPolicy:
    """``desired_for(device_id, birth) -> list of op dicts``: the same kind of
    profile whatever the needs."""

    def __init__(self, desired_for, tier=None):
        self.desired_for = desired_for
        self.default_tier = tier

    def decide(self, device, tier, now):
        ops = self.desired_for(device.device_id, device.birth or {})
        profile = {op["shard"]: dict(op, op="activate") for op in ops}
        return Decision(profile, simple_diff(device.reported, profile), None,
                        ["static profile: " + ", ".join(sorted(profile))], [], tier)

    def tiers(self):
        return [self.default_tier] if self.default_tier else []


class AllocatorPolicy:
    def __init__(self, catalog, agreements, default_tier, board_aliases=None, plan_cache_size=4096):
        if default_tier not in agreements:
            raise PolicyError(f"default tier {default_tier!r} is not among the agreements "
                              f"({', '.join(sorted(agreements))})")
        self.catalog = catalog
        self.agreements = agreements
        self.default_tier = default_tier
        self.board_aliases = dict(DEFAULT_BOARD_ALIASES if board_aliases is None else board_aliases)
        # Devices alike with the same needs get the same choice of shards:
        # remember it (bounded LRU; a new catalog makes a new policy, so a new cache).
        from ..allocator.core import ChoiceCache
        self.choices = ChoiceCache(plan_cache_size)
        # Whole plans too: devices alike (same tier, board, running profile
        # with its lease countdowns, needs, and lease position) get the same
        # profile, operations and explanations; only the clock-dependent
        # expiry is worked out per device (see _plan_key).
        self.plans = ChoiceCache(plan_cache_size)

    @classmethod
    def from_files(cls, catalog_path=None, agreements_path=None, default_tier="standard", board_aliases=None):
        from ..catalog import DEFAULT_AGREEMENTS, DEFAULT_CATALOG, load_agreements, load_catalog
        catalog = load_catalog(catalog_path or DEFAULT_CATALOG)
        agreements = load_agreements(agreements_path or DEFAULT_AGREEMENTS, catalog)
        return cls(catalog, agreements, default_tier, board_aliases)

    def tiers(self):
        return sorted(self.agreements)

    def decide(self, device, tier, now):
        from ..allocator import DeviceState, InputError, Needs, allocate
        tier = tier or self.default_tier
        agreement = self.agreements.get(tier)
        if agreement is None:
            raise PolicyError(f"device {device.device_id}: unknown tier {tier!r}")
        birth = device.birth or {}
        board = self.board_aliases.get(birth.get("board"), birth.get("board"))
        try:
            modules = birth.get("shards")
            state = DeviceState(board, dict(birth.get("caps") or {}), dict(device.reported or {}),
                                frozenset(modules) if isinstance(modules, list) else None)
            needs = Needs.from_report(device.needs, f"qos report of {device.device_id}") \
                if device.needs else Needs(dev=device.device_id)
            previous = {"expires_at": device.desired_expires_at} if device.desired_expires_at else None
            key, renew = _plan_key(agreement, state, needs, now, previous)
            hit = self.plans.get(key) if key is not None else None
            if hit is not None:
                if hit.expires_at is None:
                    expires_at = None
                else:
                    expires_at = now + agreement.max_profile_s if renew else previous["expires_at"]
                return Decision({sid: dict(op) for sid, op in hit.profile.items()},
                                [dict(op) for op in hit.operations], expires_at, list(hit.explanations),
                                list(hit.preempted), tier)
            plan = allocate(self.catalog, agreement, state, needs, now, previous=previous, cache=self.choices)
        except InputError as e:
            raise PolicyError(f"device {device.device_id}: {e}") from None
        if key is not None:
            self.plans.put(key, plan)
        return Decision({sid: dict(op) for sid, op in plan.profile.items()}, [dict(op) for op in plan.operations],
                        plan.expires_at, list(plan.explanations), list(plan.preempted), tier)


def _plan_key(agreement, state, needs, now, previous):
    """(key, renew) for the plan cache: the choice key, the running shards'
    lease countdowns, and where the lease stands -- a new one (``renew``:
    the expiry is now + max_profile_s) or the current one kept with
    ``ceil(left)`` seconds to go (the expiry stays). Mirrors the lease rule
    of allocator.core._finish; test_scale checks cached plans against fresh
    ones. (None, False) when the inputs cannot be keyed: no caching."""
    from ..allocator.core import RENEW_FRACTION, choice_key
    try:
        prev = previous.get("expires_at") if previous else None
        if prev is None:
            lease, renew = ("new",), True
        else:
            left = prev - now
            if left < agreement.max_profile_s * RENEW_FRACTION or left > agreement.max_profile_s:
                lease, renew = ("new",), True
            else:
                lease, renew = ("kept", int(math.ceil(left))), False
        countdowns = tuple(("dur_s" in op, op.get("dur_s")) for op in state.current.values())
        key = (choice_key(agreement, state, needs), countdowns, lease)
        hash(key)
    except Exception:  # malformed input: allocate() reports it properly
        return None, False
    return key, renew
