# The Shard SDK: the small interface every shard implements. See docs/shards.md.
from capdev import platform


class Shard:
    """Base class for shards. A shard module defines ``class Shard(sdk.Shard)``.

    The manager creates one instance per activation (and a fresh one on every
    restart), sets ``bw`` and ``clock``, then calls configure(budget) and
    start(). While running it calls step() every ``period_ms`` (if the shard
    defines step) and health() about once a second. Any exception from these
    methods is contained by the manager and counted as a failure.
    """

    period_ms = 100  # how often step() is due; steps must return quickly

    def __init__(self, shard_id):
        self.shard_id = shard_id
        self.budget = {}
        self.bw = None  # governor.TokenBucket at the op's bw_kbps
        self.clock = platform

    def configure(self, budget):
        """Receive the limits in force (called again on every adjust):
        {"cpu", "slice_ms", "mem_kb", "bw_kbps", "prio", "slot"}. mem_kb is
        "unenforced" where the runtime cannot measure the heap."""
        self.budget = budget

    def start(self):
        pass

    def stop(self):
        """Release what start() took. Must not raise; a raise is recorded."""
        pass

    def health(self):
        """A small dict; {"ok": False, ...} counts as a failure."""
        return {"ok": True}

    # Optional: def step(self): one short slice of periodic work.
