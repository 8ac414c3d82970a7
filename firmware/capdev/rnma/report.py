# QoS report builder: per-class demand samples in, an occasional report out.
# Reports go out when needs change (with hysteresis so a class flickering in
# and out, or a rate wobbling, does not cause churn), never more often than
# min_interval_ms, and always within the protocol's size cap.
from array import array

from capdev import cbor
from capdev import platform
from capdev import protocol
from capdev.rnma.rules import CLASSES


def p95(samples, n):
    """95th percentile (nearest rank) of the first n samples."""
    if n == 0:
        return 0
    s = sorted(samples[:n])
    k = (95 * n + 99) // 100 - 1
    return s[k if k > 0 else 0]


class ReportBuilder:
    def __init__(self, device_id, min_interval_ms=10000, max_interval_ms=300000,
                 hold_ms=30000, change_pct=25, min_delta_kbps=16, window=30,
                 cap=protocol.MAX_REPORT_BYTES, clock=platform.wall_time):
        self.dev = device_id
        self.min_interval_ms = min_interval_ms
        self.max_interval_ms = max_interval_ms
        self.hold_ms = hold_ms
        self.change_pct = change_pct
        self.min_delta_kbps = min_delta_kbps
        self.window = window
        self.cap = cap
        self.clock = clock
        self.seq = 0
        self.samples = {}    # class index -> array of kbps samples (ring)
        self.nsamp = {}      # class index -> samples held
        self.pos = {}
        self.last_seen = {}  # class index -> ms it last carried traffic
        self.reported = {}   # class index -> bw reported last time
        self.reported_level = 0
        self.last_sent = None
        self.pending = False
        self.truncated = 0
        self.suppressed = 0

    def shift(self, d):
        for c in self.last_seen:
            self.last_seen[c] -= d
        if self.last_sent is not None:
            self.last_sent -= d

    def sample(self, cls, kbps, now):
        ring = self.samples.get(cls)
        if ring is None:
            ring = array("i", bytes(4 * self.window))
            self.samples[cls] = ring
            self.nsamp[cls] = 0
            self.pos[cls] = 0
        ring[self.pos[cls]] = kbps
        self.pos[cls] = (self.pos[cls] + 1) % self.window
        if self.nsamp[cls] < self.window:
            self.nsamp[cls] += 1
        if kbps > 0:
            self.last_seen[cls] = now

    def bw(self, cls):
        ring = self.samples.get(cls)
        return p95(ring, self.nsamp[cls]) if ring is not None else 0

    def active(self, now):
        """Classes that carried traffic within the hold time (hysteresis on
        exit). A flow that sits idle in the table does not keep its class
        active: the table keeps idle flows for minutes."""
        out = []
        for c in self.last_seen:
            if now - self.last_seen[c] < self.hold_ms:
                out.append(c)
        return out

    def _changed(self, act, level):
        if level != self.reported_level:
            return True
        if len(act) != len(self.reported):
            return True
        for c in act:
            if c not in self.reported:
                return True
            old = self.reported[c]
            new = self.bw(c)
            d = new - old if new > old else old - new
            if d >= self.min_delta_kbps and d * 100 >= self.change_pct * (old if old > 0 else 1):
                return True
        return False

    def update(self, now, flows, lat, conf, level, dests):
        """Decide whether to report now; returns the payload dict or None.

        flows/lat/conf: class index -> flow count / latency ms or None / 0..100.
        """
        act = self.active(now)
        if self.last_sent is not None:
            since = now - self.last_sent
            if since < self.min_interval_ms:
                if self._changed(act, level):
                    self.pending = True
                    self.suppressed += 1
                return None
            if not (self.pending or self._changed(act, level) or since >= self.max_interval_ms):
                return None
        self.pending = False
        self.last_sent = now
        self.reported = {}
        for c in act:
            self.reported[c] = self.bw(c)
        self.reported_level = level
        return self.build(act, flows, lat, conf, level, dests)

    def build(self, act, flows, lat, conf, level, dests):
        self.seq += 1
        classes = {}
        for c in act:
            classes[CLASSES[c]] = {"bw_kbps": self.bw(c), "lat_ms": lat.get(c),
                                   "flows": flows.get(c, 0), "conf": conf.get(c, 0)}
        rep = {"v": 1, "dev": self.dev, "seq": self.seq, "t": self.clock(),
               "classes": classes,
               "security": {"level": ("none", "integrity", "confidentiality")[level],
                            "dests": sorted(dests)}}
        return self.fit(rep)

    def fit(self, rep):
        """Shrink the report until its CBOR encoding fits the cap: first the
        destination list, then the classes with the least bandwidth."""
        while len(cbor.dumps(rep)) > self.cap:
            self.truncated += 1
            d = rep["security"]["dests"]
            if d:
                d.pop()
                continue
            cl = rep["classes"]
            if not cl:
                break
            smallest = None
            for k in cl:
                if smallest is None or cl[k]["bw_kbps"] < cl[smallest]["bw_kbps"]:
                    smallest = k
            del cl[smallest]
        return rep
