"""The allocator: plans are feasible, close to optimal, stable, explained;
preemption follows the Kubernetes rule; bad input is refused whole."""

import copy
import random

import pytest

from capshard.allocator import (OP_FIELDS, DeviceState, Needs, NeedsError, Problem, allocate,
                                baseline_plan, solve, utility, violation)
from capshard.allocator.build import skeleton
from capshard.allocator.exact import solve_enumerate
from capshard.catalog import CatalogError, DeviceError, load_agreements, load_catalog, parse_agreements
from capshard.catalog.vocab import QOS_CLASSES

CATALOG = load_catalog()
TIERS = load_agreements(catalog=CATALOG)


def report(classes, level="none", dests=()):
    return {"v": 1, "dev": "d1", "seq": 1, "t": 0,
            "classes": {c: {"bw_kbps": bw, "lat_ms": None, "flows": 2, "conf": 90} for c, bw in classes.items()},
            "security": {"level": level, "dests": list(dests)}}


def device(board="sim", cpu=80, mem_kb=400, bw_kbps=3000, current=None):
    return DeviceState(board, {"cpu": cpu, "mem_kb": mem_kb, "bw_kbps": bw_kbps}, current or {})


def random_needs(rng):
    classes = rng.sample(QOS_CLASSES, rng.randint(1, 9))
    return Needs.from_report({"classes": {c: {"bw_kbps": rng.randint(5, 20000), "lat_ms": rng.choice([None, 50, 300]),
                                              "flows": 3, "conf": rng.randint(30, 100)} for c in classes},
                              "security": {"level": rng.choice(["none", "integrity", "confidentiality"]),
                                           "dests": ["bank.example"]}})


def selection_problem(tier, dev, needs):
    """The problem the allocator solved, to check its plan against."""
    from capshard.allocator.scoring import NeedWeights, score
    sk = skeleton(CATALOG, tier, dev.board)
    scores = score(CATALOG, NeedWeights(needs, tier), sk.ids)
    values = [0.0 if s in tier.baseline else scores[s][0] for s in sk.ids]
    cap = tuple(min(a, b) for a, b in zip(dev.capacity, tier.caps))
    return sk, sk.problem(cap, values, tier.baseline)


def test_needs_name_an_unknown_class_and_bad_fields():
    with pytest.raises(NeedsError) as e:
        Needs.from_report(report({"gaming": 100}))
    assert e.value.entry == "class 'gaming'" and "unknown QoS class" in str(e.value)
    bad = report({"telephony": 100})
    bad["classes"]["telephony"]["conf"] = 140
    with pytest.raises(NeedsError, match="class 'telephony': conf: must be"):
        Needs.from_report(bad)
    with pytest.raises(NeedsError, match="security: level"):
        Needs.from_report(report({}, level="secret"))


def test_plans_are_feasible_and_in_wire_form():
    rng = random.Random(7)
    for _ in range(40):
        tier = TIERS[rng.choice(list(TIERS))]
        board = rng.choice(tier.boards)
        dev = device(board, cpu=rng.randint(15, 100), mem_kb=rng.randint(30, 500), bw_kbps=rng.randint(50, 4000))
        needs = random_needs(rng)
        plan = allocate(CATALOG, tier, dev, needs, now=1000.0)
        sk, problem = selection_problem(tier, dev, needs)
        assert violation(problem, [sk.index[s] for s in plan.profile]) is None
        for op in plan.operations:
            assert tuple(op) == OP_FIELDS
            assert op["module"] == CATALOG.shards[op["shard"]].module
            assert 1 <= op["cpu"] <= 100 and op["prio"] in ("high", "medium", "low")
            assert op["dur_s"] == (0 if op["shard"] in tier.baseline else tier.max_profile_s)
        assert {o["shard"] for o in plan.operations} == set(plan.profile)  # fresh device
        assert plan.explanations and all(isinstance(w, str) for w in plan.explanations)
        assert (plan.expires_at is None) == (set(plan.profile) == set(tier.baseline))


def _small_problem(rng):
    costs, values, ids, slots, groups = [], [], [], [], []
    for g in range(3):
        positions = []
        for s in range(2):
            members = []
            for _ in range(3):
                members.append(len(ids))
                ids.append(f"g{g}s{s}x{len(members)}")
                costs.append((rng.randint(1, 20), rng.randint(1, 20), rng.randint(0, 20)))
                values.append(rng.uniform(0, 10))
            positions.append(len(slots))
            slots.append((f"g{g}.s{s}", s == 0 and g < 2, False, members))
        groups.append(positions)
    conflicts = {(1, 7), (7, 1), (4, 13), (13, 4)}
    requires = {2: [tuple(slots[5][3])], 9: [(15,)]}
    cap = tuple(int(sum(max(costs[i][d] for i in s[3]) for s in slots) * 0.4) for d in range(3))
    return Problem(ids, values, costs, slots, groups, cap, frozenset(), requires, frozenset(conflicts))


def test_solver_matches_enumeration_on_small_problems():
    rng = random.Random(3)
    for _ in range(60):
        problem = _small_problem(rng)
        ours, _ = solve(problem)
        best = solve_enumerate(problem)
        assert violation(problem, ours) is None
        assert utility(problem, ours) == pytest.approx(utility(problem, best), abs=1e-9)


def test_alternative_when_preferred_shard_is_not_on_the_board():
    needs = Needs.from_report(report({"standard": 500}, level="confidentiality", dests=["bank"]))
    on_router = allocate(CATALOG, TIERS["premium"], device("openwrt", mem_kb=4000), needs, 0.0)
    on_esp32 = allocate(CATALOG, TIERS["premium"], device("esp32", mem_kb=100), needs, 0.0)
    router_cipher = next(s for s, o in on_router.profile.items() if o["slot"] == "vpn.cipher")
    esp_cipher = next(s for s, o in on_esp32.profile.items() if o["slot"] == "vpn.cipher")
    assert router_cipher in ("chacha20-poly1305", "aes128-gcm-hw")
    assert esp_cipher in ("aes128-ctr", "aes256-ctr")
    assert any(w.startswith("vpn.cipher: refused chacha20-poly1305") and "does not run on board 'esp32'" in w
               for w in on_esp32.explanations)


def test_null_cipher_never_serves_confidentiality():
    needs = Needs.from_report(report({"standard": 300}, level="confidentiality", dests=["bank"]))
    for cpu in (20, 40, 100):
        plan = allocate(CATALOG, TIERS["test"], device("sim", cpu=cpu), needs, 0.0)
        assert "null-cipher" not in plan.profile


def test_dependencies_are_closed_and_activated_first():
    needs = Needs.from_report(report({"standard": 300, "secure-tunnel": 300}, level="integrity", dests=["x"] * 3))
    tier = TIERS["test"]
    for cpu in range(20, 101, 10):
        plan = allocate(CATALOG, tier, device("openwrt", cpu=cpu, mem_kb=4000), needs, 0.0)
        order = [o["shard"] for o in plan.operations]
        for sid in plan.profile:
            for options in CATALOG.requirements[sid]:
                dep = next(o for o in options if o in plan.profile)
                assert order.index(dep) < order.index(sid)
        assert not {"cake-lite", "strict-priority"} <= set(plan.profile)
    plan = allocate(CATALOG, tier, device("openwrt", cpu=100, mem_kb=4000), needs, 0.0)
    assert "ids-lite" in plan.profile or "anomaly-detect" in plan.profile
    assert any("required by" in w for w in plan.explanations)


def test_small_changes_in_needs_do_not_flap():
    rng = random.Random(11)
    tier = TIERS["premium"]
    for _ in range(15):
        needs = random_needs(rng)
        dev = device("esp32s3", cpu=rng.randint(30, 70), mem_kb=rng.randint(80, 250), bw_kbps=1500)
        first = allocate(CATALOG, tier, dev, needs, now=0.0)
        wiggled = needs.to_report()
        for demand in wiggled["classes"].values():
            demand["bw_kbps"] = int(demand["bw_kbps"] * rng.uniform(0.9, 1.1))
            demand["conf"] = max(0, min(100, demand["conf"] + rng.randint(-5, 5)))
        later = DeviceState(dev.board, dev.capacities, first.profile)
        second = allocate(CATALOG, tier, later, Needs.from_report(wiggled), now=60.0, previous=first)
        assert second.operations == []
        assert second.expires_at == first.expires_at


def test_lease_is_renewed_when_it_runs_low():
    tier = TIERS["standard"]
    needs = Needs.from_report(report({"telephony": 100}))
    first = allocate(CATALOG, tier, device(), needs, now=0.0)
    dynamic = set(first.profile) - set(tier.baseline)
    assert dynamic
    late = tier.max_profile_s * 0.8
    second = allocate(CATALOG, tier, device(current=first.profile), needs, now=late, previous=first)
    assert {o["shard"] for o in second.operations} == dynamic
    assert all(o["op"] == "adjust" and o["dur_s"] == tier.max_profile_s for o in second.operations)
    assert second.expires_at == late + tier.max_profile_s


def _tight_tier(telephony):
    doc = {"schema": 1, "tiers": {"t": {
        "allow": ["traffic-shaping", "security-filtering.firewall"],
        "deny": ["policer", "token-bucket", "cake-lite"],
        "caps": {"cpu": 100, "mem_kb": 1000, "bw_kbps": 1000}, "max_profile_s": 600,
        "baseline": ["dscp-marker", "acl-stateless"],
        "priorities": {"telephony": telephony, "low-priority-data": "low"}}}}
    return parse_agreements(doc, CATALOG, "agreements.toml")["t"]


def _running(tier, shard_id, prio):
    from capshard.allocator.plan import op_dict
    current = {s: op_dict("activate", CATALOG.shards[s], "high", 0, None) for s in tier.baseline}
    current[shard_id] = op_dict("activate", CATALOG.shards[shard_id], prio, 600, None)
    return current


def test_preemption_takes_lower_priority_only():
    needs = Needs.from_report(report({"low-priority-data": 8000, "telephony": 100}))
    tier = _tight_tier("high")
    # CPU for the baseline and htb-lite only: nothing is left for a scheduler
    cpu = sum(CATALOG.shards[s].cpu for s in tier.baseline + ("htb-lite",))
    assert min(CATALOG.shards[s].cpu for s in CATALOG.slots["traffic-shaping.scheduler"].shards) > 0
    dev = device("sim", cpu=cpu, current=_running(tier, "htb-lite", "low"))
    plan = allocate(CATALOG, tier, dev, needs, now=0.0)
    assert plan.preempted == ["htb-lite"]
    assert any(o["op"] == "deactivate" and o["shard"] == "htb-lite" for o in plan.operations)
    scheduler = [s for s, o in plan.profile.items() if o["slot"] == "traffic-shaping.scheduler"]
    assert scheduler and plan.profile[scheduler[0]]["prio"] == "high"
    assert any(w.startswith("preempted htb-lite (low)") for w in plan.explanations)
    assert set(tier.baseline) <= set(plan.profile)
    # equal priority: the running shard stays
    same = _tight_tier("low")
    plan = allocate(CATALOG, same, device("sim", cpu=cpu, current=_running(same, "htb-lite", "low")), needs, 0.0)
    assert plan.preempted == [] and "htb-lite" in plan.profile
    assert all(o["op"] == "adjust" for o in plan.operations)  # lease and failover targets only


def test_kubernetes_victim_order():
    """Among victim sets that make room, the one whose highest priority is
    lowest wins, then the one with fewer victims."""
    from capshard.allocator.preemption import preempt
    # slots: a (running, medium, cost 5), b (running, low, cost 5), c, d (running, low, 3 each),
    # e (wanted, high, cost 6); capacity 16 -> must free 6
    ids = ["a", "b", "c", "d", "e"]
    costs = [(5, 0, 0), (5, 0, 0), (3, 0, 0), (3, 0, 0), (6, 0, 0)]
    slots = [(k, False, False, [i]) for i, k in enumerate(ids)]
    problem = Problem(ids, [1, 1, 1, 1, 5], costs, slots, [[p] for p in range(5)], (16, 9, 9),
                      utility=[1, 1, 1, 1, 5])
    rank = [1, 0, 0, 0, 2]
    selection, evictions = preempt(problem, [0, 1, 2, 3], [0, 1, 2, 3, 4], rank, {0, 1, 2, 3},
                                   ["a", "b", "c", "d", "e"])
    # {b} frees 5 (not enough); {a,..} has a medium victim; {b, c} and {c, d} are both low:
    # fewest victims -> two; both pairs have two, so least value lost decides (equal) -> first found
    victims = {ids[v] for v, _ in evictions}
    assert "a" not in victims and len(victims) == 2 and 4 in selection


def test_baseline_plan_and_device_birth():
    tier = TIERS["basic"]
    plan = baseline_plan(CATALOG, tier, device("esp32", cpu=50, mem_kb=90, bw_kbps=500))
    assert set(plan.profile) == set(tier.baseline)
    assert all(o["op"] == "activate" and o["dur_s"] == 0 for o in plan.operations)
    assert plan.expires_at is None
    # a dynamic shard left over is deactivated at birth
    born = baseline_plan(CATALOG, tier, device("esp32", current={"policer": dict(plan.operations[0], shard="policer")}))
    assert [o["shard"] for o in born.operations if o["op"] == "deactivate"] == ["policer"]


def test_bad_input_is_refused_whole():
    tier = TIERS["premium"]
    needs = Needs.from_report(report({"telephony": 100}))
    with pytest.raises(CatalogError, match="baseline.*does not fit board 'esp32'"):
        allocate(CATALOG, tier, device("esp32", cpu=5, mem_kb=10), needs, 0.0)
    with pytest.raises(DeviceError, match="unknown board 'esp8266'"):
        allocate(CATALOG, tier, device("esp8266"), needs, 0.0)
    with pytest.raises(DeviceError, match="capacities.cpu"):
        allocate(CATALOG, tier, DeviceState("sim", {"cpu": -1, "mem_kb": 1, "bw_kbps": 1}), needs, 0.0)
    dev = device(current={"wfq": {"op": "activate", "shard": "wfq", "prio": "high", "ver": "1.0.0"}})
    before = copy.deepcopy(dev)
    allocate(CATALOG, tier, dev, needs, 0.0)
    assert dev == before  # inputs are never mutated


def test_running_shard_no_longer_allowed_is_deactivated():
    needs = Needs.from_report(report({"telephony": 100}))
    dev = device(current={"rs-fec": {"op": "activate", "shard": "rs-fec", "ver": "1.0.0", "prio": "high",
                                     "module": "capdev.shards.rs_fec"}, "gone-shard": {"prio": "low"}})
    plan = allocate(CATALOG, TIERS["basic"], dev, needs, 0.0)
    off = [o["shard"] for o in plan.operations if o["op"] == "deactivate"]
    assert sorted(off) == ["gone-shard", "rs-fec"]
    assert "deactivated rs-fec: not allowed by tier 'basic'" in plan.explanations
    assert "deactivated gone-shard: no longer in the catalog" in plan.explanations


def test_a_baseline_shard_missing_from_the_device_is_a_clear_device_error():
    tier = TIERS["standard"]
    modules = frozenset(s.module for s in CATALOG.shards.values() if s.id != tier.baseline[0])
    dev = DeviceState("sim", {"cpu": 100, "mem_kb": 512, "bw_kbps": 20000}, {}, modules)
    with pytest.raises(DeviceError, match=f"baseline shard '{tier.baseline[0]}'.*not on the device"):
        allocate(CATALOG, tier, dev, Needs.from_report(report({"standard": 100})), 0.0)
