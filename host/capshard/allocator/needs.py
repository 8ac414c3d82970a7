"""The allocator's inputs from the device: QoS needs (from the RNMA's report)
and the device's state (board, capacities, the profile it runs)."""

from dataclasses import dataclass, field

from ..catalog.errors import DeviceError, NeedsError
from ..catalog.vocab import QOS_CLASSES, RESOURCES, SECURITY_LEVELS


@dataclass(frozen=True)
class ClassNeed:
    bw_kbps: int            # p95 bandwidth
    lat_ms: object          # latency bound in ms, or None for the class's nominal bound
    flows: int
    conf: int               # classifier confidence 0..100


@dataclass(frozen=True)
class Needs:
    classes: dict = field(default_factory=dict)   # class name -> ClassNeed
    security: str = "none"
    dests: tuple = ()
    dev: str = ""
    seq: int = 0

    @classmethod
    def from_report(cls, report, source="needs"):
        """Build from a QoS report payload dict; NeedsError names the culprit."""
        if not isinstance(report, dict):
            raise NeedsError(source, None, None, f"a report is a map, got {type(report).__name__}")
        if report.get("v", 1) != 1:
            raise NeedsError(source, None, "v", f"unsupported report version {report.get('v')!r}")
        classes = report.get("classes", {})
        if not isinstance(classes, dict):
            raise NeedsError(source, None, "classes", "must be a map of class -> demand")
        parsed = {}
        for name, demand in classes.items():
            if name not in QOS_CLASSES:
                raise NeedsError(source, f"class '{name}'", None,
                                 f"unknown QoS class (known: {', '.join(QOS_CLASSES)})")
            if not isinstance(demand, dict):
                raise NeedsError(source, f"class '{name}'", None, "demand must be a map")
            bw = _int(source, name, demand, "bw_kbps", 0, None)
            lat = demand.get("lat_ms")
            if lat is not None:
                lat = _int(source, name, demand, "lat_ms", 1, None)
            flows = _int(source, name, demand, "flows", 0, None, default=0)
            conf = _int(source, name, demand, "conf", 0, 100, default=100)
            parsed[name] = ClassNeed(bw, lat, flows, conf)
        security = report.get("security") or {}
        if not isinstance(security, dict):
            raise NeedsError(source, "security", None, "must be a map with 'level' and 'dests'")
        level = security.get("level", "none")
        if level not in SECURITY_LEVELS:
            raise NeedsError(source, "security", "level",
                             f"must be one of {', '.join(SECURITY_LEVELS)}, got {level!r}")
        dests = security.get("dests", [])
        if not isinstance(dests, (list, tuple)) or not all(isinstance(d, str) for d in dests):
            raise NeedsError(source, "security", "dests", "must be a list of strings")
        dev = report.get("dev", "")
        seq = report.get("seq", 0)
        return cls(parsed, level, tuple(dests), dev if isinstance(dev, str) else "",
                   seq if isinstance(seq, int) else 0)

    def to_report(self):
        return {"v": 1, "dev": self.dev, "seq": self.seq,
                "classes": {n: {"bw_kbps": c.bw_kbps, "lat_ms": c.lat_ms, "flows": c.flows,
                                "conf": c.conf} for n, c in self.classes.items()},
                "security": {"level": self.security, "dests": list(self.dests)}}


def _int(source, name, demand, key, low, high, default=...):
    if key not in demand:
        if default is ...:
            raise NeedsError(source, f"class '{name}'", key, "missing")
        return default
    value = demand[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise NeedsError(source, f"class '{name}'", key, f"must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise NeedsError(source, f"class '{name}'", key, f"must be {bound}, got {value}")
    return value


@dataclass(frozen=True)
class DeviceState:
    board: str
    capacities: dict        # {"cpu": percent, "mem_kb": int, "bw_kbps": int}
    current: dict = field(default_factory=dict)   # shard id -> op-dict as running
    modules: frozenset | None = None  # shard code modules on the device (None: any)

    @classmethod
    def from_dict(cls, data, source="device"):
        if not isinstance(data, dict):
            raise DeviceError(source, None, None, "a device state is a map")
        state = cls(data.get("board"), data.get("capacities"), data.get("current") or {})
        state.check(source)
        return state

    def check(self, source="device", catalog=None):
        """Raise DeviceError if malformed (or the board is unknown to the catalog)."""
        if not isinstance(self.board, str) or not self.board:
            raise DeviceError(source, None, "board", f"must be a board name, got {self.board!r}")
        if catalog is not None and self.board not in catalog.boards:
            raise DeviceError(source, None, "board",
                              f"unknown board '{self.board}' (catalog has {', '.join(sorted(catalog.boards))})")
        caps = self.capacities
        if not isinstance(caps, dict):
            raise DeviceError(source, None, "capacities", "must be a map of cpu, mem_kb, bw_kbps")
        for resource in RESOURCES:
            value = caps.get(resource)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DeviceError(source, None, f"capacities.{resource}",
                                  f"must be an integer >= 0, got {value!r}")
        if not isinstance(self.current, dict):
            raise DeviceError(source, None, "current", "must be a map of shard id -> op")
        for shard_id, op in self.current.items():
            if not isinstance(op, dict):
                raise DeviceError(source, f"current '{shard_id}'", None, "must be an op map")
            prio = op.get("prio", "low")
            if prio not in ("high", "medium", "low"):
                raise DeviceError(source, f"current '{shard_id}'", "prio", f"unknown priority {prio!r}")

    @property
    def capacity(self):
        return tuple(self.capacities[r] for r in RESOURCES)
