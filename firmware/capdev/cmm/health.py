# Shard health: heartbeats, error counts, step latency, and the failure policy
# (restart with exponential backoff; after N failures within a window, give
# up). Pure: times are plain millisecond counts handed in by the caller.
# Only what runs every tick lives here: applying the policy to a failure is in
# ops.py (failure, backoff), the per-shard report in reports.py (snapshot).

MAX_EVENTS = 64


class HealthPolicy:
    def __init__(self, max_failures=3, window_ms=60000, backoff_ms=1000,
                 backoff_max_ms=30000, heartbeat_ms=1000):
        self.max_failures = max_failures
        self.window_ms = window_ms
        self.backoff_ms = backoff_ms
        self.backoff_max_ms = backoff_max_ms
        self.heartbeat_ms = heartbeat_ms


class HealthRecord:
    """Counters for one shard. Latencies are in ms; the average is an EWMA
    kept as an integer scaled by 8 (no floats on the hot path; reports.lat_avg
    reads it back)."""

    def __init__(self):
        self.errors = 0
        self.restarts = 0
        # Times (ms) of failures still inside the window; () until the first:
        # the empty tuple is shared, an empty list costs 64 B per shard.
        self.failures = ()
        self.last_error = ""
        self.beat_ms = None
        # Last health() call. Here, not on the manager's entry: this record
        # has a free attribute slot, the entry's table would grow by five.
        self.checked_ms = 0
        self.steps = 0
        self.lat_last = 0
        self.lat_max = 0
        self.lat_avg8 = 0

    def beat(self, now):
        self.beat_ms = now

    def latency(self, ms):
        self.steps += 1
        self.lat_last = ms
        if ms > self.lat_max:
            self.lat_max = ms
        if self.steps == 1:
            self.lat_avg8 = ms * 8
        else:
            self.lat_avg8 += ms - (self.lat_avg8 >> 3)


class EventLog:
    """Bounded queue of health events for the provider; the oldest are dropped
    (and counted) when nobody drains it, so a flapping shard cannot eat the heap."""

    def __init__(self, limit=MAX_EVENTS):
        self.limit = limit
        self.items = []
        self.dropped = 0

    def emit(self, shard, ev, t, reason="", old=None, new=None):
        # Held as a tuple (two GC blocks on a 64-bit port, against ten or
        # more for a dict); made into the wire's dict only when drained.
        self.items.append((shard, ev, t, reason, old, new))
        if len(self.items) > self.limit:
            self.items.pop(0)
            self.dropped += 1

    def drain(self):
        """The queued events as health-message dicts, oldest first; empties the log."""
        items = self.items
        self.items = []
        out = []
        for shard, ev, t, reason, old, new in items:
            item = {"shard": shard, "ev": ev, "t": t, "reason": reason}
            if old is not None:
                item["from"] = old
                item["to"] = new
            out.append(item)
        return out
