"""Load and validate the catalog and the agreements (TOML, stdlib tomllib).

Every problem raises CatalogError naming the file, the entry and the field.
Loading builds new immutable objects and returns them only when everything is
valid, so a bad file never leaves anything half-applied.
"""

import os
import re
import tomllib

from .errors import CatalogError
from .schema import Agreement, Board, Capability, Catalog, Shard, Slot
from .vocab import NEED_KEYS, PRIORITIES, RESOURCES, SECURITY, SECURITY_LEVELS

SCHEMA_VERSION = 1
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _read(path):
    name = os.path.basename(path)
    try:
        with open(path, "rb") as f:
            return name, tomllib.load(f)
    except OSError as e:
        raise CatalogError(name, None, None, f"cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise CatalogError(name, None, None, f"not valid TOML: {e}") from None


class _Checker:
    """Typed field access that reports file / entry / field on failure."""

    def __init__(self, source, entry, table):
        self.source, self.entry, self.table = source, entry, table
        if not isinstance(table, dict):
            self.fail(None, f"must be a table, got {type(table).__name__}")

    def fail(self, field, reason):
        raise CatalogError(self.source, self.entry, field, reason)

    def known(self, allowed):
        for key in self.table:
            if key not in allowed:
                self.fail(key, f"unknown field (allowed: {', '.join(sorted(allowed))})")

    def get(self, field, kind, default=...):
        if field not in self.table:
            if default is ...:
                self.fail(field, "missing")
            return default
        value = self.table[field]
        ok = isinstance(value, kind) and not (kind in (int, (int, float)) and isinstance(value, bool))
        if not ok:
            names = kind.__name__ if isinstance(kind, type) else "number"
            self.fail(field, f"must be {names}, got {value!r}")
        return value

    def count(self, field, default=...):
        value = self.get(field, int, default)
        if value is not None and value < 0:
            self.fail(field, f"must be >= 0, got {value}")
        return value

    def number(self, field, low, high, default=...):
        value = self.get(field, (int, float), default)
        if not low <= value <= high:
            self.fail(field, f"must be in [{low}, {high}], got {value}")
        return float(value)

    def name(self, field, default=...):
        value = self.get(field, str, default)
        if value is not None and not _NAME.match(value):
            self.fail(field, f"must be a lower-case name like 'aes128-ctr', got {value!r}")
        return value

    def choice(self, field, choices, default=...):
        value = self.get(field, str, default)
        if value not in choices:
            self.fail(field, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def strings(self, field, default=...):
        value = self.get(field, list, default)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.fail(f"{field}[{i}]", f"must be a string, got {item!r}")
        return tuple(value)

    def sub(self, field, default=...):
        return _Checker(self.source, self.entry, self.get(field, dict, default))


def _check_schema(source, doc):
    top = _Checker(source, None, doc)
    version = top.get("schema", int)
    if version != SCHEMA_VERSION:
        top.fail("schema", f"unsupported schema {version} (this build reads {SCHEMA_VERSION})")
    return top


# ---------------------------------------------------------------- catalog


def load_catalog(path):
    """Parse and validate a catalog file; return a Catalog."""
    source, doc = _read(path)
    return parse_catalog(doc, source)


def parse_catalog(doc, source="catalog"):
    top = _check_schema(source, doc)
    top.known({"schema", "name", "boards", "capabilities", "shard"})
    boards = _parse_boards(source, top.get("boards", dict))
    capabilities, slot_info = _parse_capabilities(source, top.get("capabilities", dict))
    shard_list = top.get("shard", list)
    shards = {}
    for i, table in enumerate(shard_list):
        shard = _parse_shard(source, i, table, boards, slot_info)
        if shard.id in shards:
            raise CatalogError(source, f"shard '{shard.id}'", "id", "duplicate shard id")
        shards[shard.id] = shard
    slots = {}
    for key, (cap, name, required, serves, desc) in slot_info.items():
        members = tuple(s.id for s in shards.values() if s.slot == key)
        if not members:
            raise CatalogError(source, f"slot '{key}'", None, "has no shard")
        slots[key] = Slot(cap, name, required, serves, members, desc)
    requirements = _resolve_requirements(source, shards, slots)
    pairs = set()
    for shard in shards.values():
        for j, other in enumerate(shard.conflicts):
            if other not in shards:
                raise CatalogError(source, f"shard '{shard.id}'", f"conflicts[{j}]",
                                   f"unknown shard '{other}'")
            if other == shard.id:
                raise CatalogError(source, f"shard '{shard.id}'", f"conflicts[{j}]",
                                   "a shard cannot conflict with itself")
            pairs.add((shard.id, other))
            pairs.add((other, shard.id))
    for shard_id, reqs in requirements.items():
        for options in reqs:
            if all((shard_id, o) in pairs for o in options):
                raise CatalogError(source, f"shard '{shard_id}'", "requires",
                                   f"every shard that satisfies {options} conflicts with it")
    _check_acyclic(source, requirements)
    return Catalog(source, boards, capabilities, slots, shards, requirements, frozenset(pairs))


def _parse_boards(source, table):
    if not table:
        raise CatalogError(source, None, "boards", "at least one board is needed")
    boards = {}
    for name, entry in table.items():
        c = _Checker(source, f"board '{name}'", entry)
        c.known({"description", "cpu", "mem_kb", "bw_kbps"})
        if not _NAME.match(name):
            c.fail(None, "board names are lower-case names")
        boards[name] = Board(name, c.count("cpu"), c.count("mem_kb"), c.count("bw_kbps"),
                             c.get("description", str, ""))
    return boards


def _parse_capabilities(source, table):
    if not table:
        raise CatalogError(source, None, "capabilities", "at least one capability is needed")
    capabilities, slot_info = {}, {}
    for name, entry in table.items():
        c = _Checker(source, f"capability '{name}'", entry)
        c.known({"description", "slots"})
        if not _NAME.match(name):
            c.fail(None, "capability names are lower-case names")
        slots = c.get("slots", dict)
        if not slots:
            c.fail("slots", "at least one slot is needed")
        keys, security = [], False
        for slot_name, slot_entry in slots.items():
            key = f"{name}.{slot_name}"
            s = _Checker(source, f"slot '{key}'", slot_entry)
            s.known({"description", "required", "serves"})
            if not _NAME.match(slot_name):
                s.fail(None, "slot names are lower-case names")
            serves = {}
            for need, relevance in s.get("serves", dict).items():
                if need not in NEED_KEYS:
                    s.fail(f"serves.{need}", f"unknown QoS class (known: {', '.join(NEED_KEYS)})")
                if isinstance(relevance, bool) or not isinstance(relevance, (int, float)) \
                        or not 0 < relevance <= 1:
                    s.fail(f"serves.{need}", f"relevance must be in (0, 1], got {relevance!r}")
                serves[need] = float(relevance)
            security = security or SECURITY in serves
            slot_info[key] = (name, slot_name, s.get("required", bool, False), serves,
                              s.get("description", str, ""))
            keys.append(key)
        capabilities[name] = Capability(name, tuple(keys), security, c.get("description", str, ""))
    return capabilities, slot_info


def _parse_shard(source, index, table, boards, slot_info):
    entry = f"shard[{index}]"
    if isinstance(table, dict) and isinstance(table.get("id"), str):
        entry = f"shard '{table['id']}'"
    c = _Checker(source, entry, table)
    c.known({"id", "version", "slot", "module", "boards", "cost", "traits", "requires",
              "conflicts", "test_only", "description"})
    shard_id = c.name("id")
    version = c.get("version", str)
    if not version:
        c.fail("version", "must not be empty")
    slot = c.get("slot", str)
    if slot not in slot_info:
        c.fail("slot", f"unknown slot '{slot}' (known: {', '.join(sorted(slot_info))})")
    module = c.get("module", str)
    if not _MODULE.match(module):
        c.fail("module", f"must be a dotted Python module name, got {module!r}")
    on = c.strings("boards")
    if not on:
        c.fail("boards", "must name at least one board")
    for i, board in enumerate(on):
        if board not in boards:
            c.fail(f"boards[{i}]", f"unknown board '{board}' (known: {', '.join(sorted(boards))})")
    cost = c.sub("cost")
    cost.known(set(RESOURCES))
    cpu, mem_kb, bw = (_cost(cost, r) for r in RESOURCES)
    if cpu > 100:
        cost.fail("cost.cpu", f"a CPU share is a percentage, got {cpu}")
    traits = c.sub("traits")
    traits.known({"latency_ms", "throughput_kbps", "loss_pct", "security", "efficacy"})
    latency = traits.number("latency_ms", 0, 60000)
    throughput = traits.get("throughput_kbps", int)
    if throughput <= 0:
        traits.fail("throughput_kbps", f"must be > 0, got {throughput}")
    loss = traits.number("loss_pct", 0, 100, 0.0)
    security = traits.choice("security", SECURITY_LEVELS, "none")
    efficacy = traits.number("efficacy", 0, 1)
    if efficacy == 0:
        traits.fail("efficacy", "must be > 0")
    return Shard(shard_id, version, slot, module, frozenset(on), cpu, mem_kb, bw, latency,
                 throughput, loss, security, efficacy, c.strings("requires", []),
                 c.strings("conflicts", []), c.get("test_only", bool, False),
                 c.get("description", str, ""))


def _cost(checker, resource):
    if resource not in checker.table:
        checker.fail(f"cost.{resource}", "missing")
    value = checker.table[resource]
    if isinstance(value, bool) or not isinstance(value, int):
        checker.fail(f"cost.{resource}", f"must be an integer, got {value!r}")
    if value < 0:
        checker.fail(f"cost.{resource}", f"must be >= 0, got {value}")
    return value


def _resolve_requirements(source, shards, slots):
    resolved = {}
    for shard in shards.values():
        reqs = []
        for j, ref in enumerate(shard.requires):
            if ref in shards:
                options, own = (ref,), shards[ref].slot == shard.slot
            elif ref in slots:
                options, own = slots[ref].shards, ref == shard.slot
            else:
                raise CatalogError(source, f"shard '{shard.id}'", f"requires[{j}]",
                                   f"'{ref}' is neither a shard id nor a slot")
            if own:
                raise CatalogError(source, f"shard '{shard.id}'", f"requires[{j}]",
                                   f"'{ref}' is in the shard's own slot, where only one shard runs")
            reqs.append(options)
        resolved[shard.id] = tuple(reqs)
    return resolved


def _check_acyclic(source, requirements):
    """Dependencies must form a DAG so activation has an order; a slot
    requirement counts as an edge to every shard of that slot."""
    state = {}  # 1 = on the stack, 2 = done

    def visit(node, path):
        state[node] = 1
        for options in requirements[node]:
            for dep in options:
                if state.get(dep) == 1:
                    cycle = path[path.index(dep):] + [dep] if dep in path else [node, dep]
                    raise CatalogError(source, f"shard '{dep}'", "requires",
                                       "dependency cycle: " + " -> ".join(cycle))
                if dep not in state:
                    visit(dep, path + [dep])
        state[node] = 2

    for node in requirements:
        if node not in state:
            visit(node, [node])


# ------------------------------------------------------------- agreements


def load_agreements(path, catalog):
    """Parse and validate an agreements file against a catalog;
    return {tier name: Agreement}."""
    source, doc = _read(path)
    return parse_agreements(doc, catalog, source)


def parse_agreements(doc, catalog, source="agreements"):
    top = _check_schema(source, doc)
    top.known({"schema", "tiers"})
    tiers = top.get("tiers", dict)
    if not tiers:
        top.fail("tiers", "at least one tier is needed")
    return {name: _parse_tier(source, name, entry, catalog) for name, entry in tiers.items()}


def _expand(c, field, refs, catalog):
    """Capability names, slot keys and shard ids -> shard ids."""
    out = set()
    for i, ref in enumerate(refs):
        if ref == "*":
            out.update(catalog.shards)
        elif ref in catalog.capabilities:
            for key in catalog.capabilities[ref].slots:
                out.update(catalog.slots[key].shards)
        elif ref in catalog.slots:
            out.update(catalog.slots[ref].shards)
        elif ref in catalog.shards:
            out.add(ref)
        else:
            c.fail(f"{field}[{i}]", f"unknown shard, slot or capability '{ref}'")
    return out


def _parse_tier(source, name, entry, catalog):
    c = _Checker(source, f"tier '{name}'", entry)
    c.known({"description", "test", "boards", "allow", "deny", "caps", "max_profile_s",
             "priorities", "default_priority", "baseline"})
    test = c.get("test", bool, False)
    allow_refs = c.strings("allow")
    allowed = _expand(c, "allow", allow_refs, catalog)
    allowed -= _expand(c, "deny", c.strings("deny", []), catalog)
    explicit = {r for r in allow_refs if r in catalog.shards}
    for shard_id in sorted(allowed):
        if catalog.shards[shard_id].test_only and not test:
            if shard_id in explicit:
                c.fail("allow", f"shard '{shard_id}' is test-only; only a tier with test = true may allow it")
            allowed.discard(shard_id)  # wildcards never pull in test-only shards
    caps = c.sub("caps")
    caps.known(set(RESOURCES))
    cap_values = [_cost(caps, r) for r in RESOURCES]
    max_profile = c.get("max_profile_s", int)
    if max_profile <= 0:
        c.fail("max_profile_s", f"must be > 0, got {max_profile}")
    priorities = {}
    prios = c.sub("priorities", {})
    for need, level in prios.table.items():
        if need not in NEED_KEYS:
            c.fail(f"priorities.{need}", f"unknown QoS class (known: {', '.join(NEED_KEYS)})")
        if level not in PRIORITIES:
            c.fail(f"priorities.{need}", f"must be one of {', '.join(PRIORITIES)}, got {level!r}")
        priorities[need] = level
    boards = c.strings("boards", tuple(catalog.boards))
    for i, board in enumerate(boards):
        if board not in catalog.boards:
            c.fail(f"boards[{i}]", f"unknown board '{board}'")
    baseline = c.strings("baseline", [])
    for i, shard_id in enumerate(baseline):
        if shard_id not in catalog.shards:
            c.fail(f"baseline[{i}]", f"unknown shard '{shard_id}'")
        if shard_id not in allowed:
            c.fail(f"baseline[{i}]", f"shard '{shard_id}' is not allowed by this tier")
    agreement = Agreement(name, source, frozenset(allowed), *cap_values, max_profile, priorities,
                          c.choice("default_priority", PRIORITIES, "low"), baseline, boards, test,
                          c.get("description", str, ""))
    problem = baseline_problem(catalog, agreement)
    if problem:
        c.fail("baseline", problem)
    for board in boards:
        problem = baseline_problem(catalog, agreement, catalog.boards[board].name,
                                   catalog.boards[board].capacity)
        if problem:
            c.fail("baseline", problem)
    return agreement


def baseline_problem(catalog, agreement, board=None, capacity=None):
    """Why the tier's baseline is not a valid profile (on a board), or None."""
    base = agreement.baseline
    chosen = set(base)
    if len(chosen) != len(base):
        return "lists a shard twice"
    slots = {}
    for shard_id in base:
        shard = catalog.shards[shard_id]
        if shard.slot in slots:
            return f"'{slots[shard.slot]}' and '{shard_id}' are both in slot {shard.slot}"
        slots[shard.slot] = shard_id
        for options in catalog.requirements[shard_id]:
            if not chosen.intersection(options):
                return f"'{shard_id}' requires one of {', '.join(options)}, not in the baseline"
        for other in base:
            if catalog.conflicts(shard_id, other):
                return f"'{shard_id}' conflicts with '{other}'"
    for cap in {catalog.shards[s].capability for s in base}:
        for key in catalog.capabilities[cap].slots:
            if catalog.slots[key].required and key not in slots:
                return f"capability '{cap}' is incomplete: required slot {key} is empty"
    total = [sum(catalog.shards[s].cost[i] for s in base) for i in range(3)]
    for i, resource in enumerate(RESOURCES):
        if total[i] > agreement.caps[i]:
            return f"needs {resource} {total[i]}, over the tier's cap {agreement.caps[i]}"
    if board is not None:
        for shard_id in base:
            if board not in catalog.shards[shard_id].boards:
                return f"'{shard_id}' does not run on board '{board}'"
        for i, resource in enumerate(RESOURCES):
            if total[i] > capacity[i]:
                return f"does not fit board '{board}': needs {resource} {total[i]}, capacity {capacity[i]}"
    return None

