# Shard lifecycle: one explicit transition table, modelled on Greengrass
# component states. Pure: no imports of shard code, no clock; every accepted
# transition is handed to a sink so it can be reported.

ABSENT = "absent"
LOADED = "loaded"
STARTING = "starting"
RUNNING = "running"
STOPPING = "stopping"
STOPPED = "stopped"
ERRORED = "errored"
BROKEN = "broken"

STATES = (ABSENT, LOADED, STARTING, RUNNING, STOPPING, STOPPED, ERRORED, BROKEN)

# (state, event) -> next state. Anything not listed is refused.
TRANSITIONS = {
    (ABSENT, "load"): LOADED,
    (LOADED, "start"): STARTING,
    (LOADED, "unload"): ABSENT,
    (STARTING, "started"): RUNNING,
    (STARTING, "fail"): ERRORED,  # constructor, configure() or start() raised
    (RUNNING, "stop"): STOPPING,
    (RUNNING, "fail"): ERRORED,  # step/health raised, or a governor limit hit
    (STOPPING, "stopped"): STOPPED,
    (STOPPING, "fail"): ERRORED,  # stop() itself raised
    (STOPPED, "start"): STARTING,
    (STOPPED, "unload"): ABSENT,
    (ERRORED, "restart"): STARTING,
    (ERRORED, "give_up"): BROKEN,
    (ERRORED, "unload"): ABSENT,
    # Broken stays broken "until told otherwise": only an explicit reset
    # (a new activate or a deactivate from the provider) leaves it.
    (BROKEN, "reset"): ABSENT,
}


class LifecycleError(ValueError):
    """An event that the current state does not allow."""


class Lifecycle:
    """The state of one shard. ``sink(shard_id, event, old, new, reason)`` sees
    every transition."""

    def __init__(self, shard_id, sink=None):
        self.shard_id = shard_id
        self.state = ABSENT
        self._sink = sink

    def can(self, event):
        return (self.state, event) in TRANSITIONS

    def fire(self, event, reason=""):
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise LifecycleError("shard " + self.shard_id + ": event '" + event
                                 + "' not allowed in state '" + self.state + "'")
        old = self.state
        self.state = new
        if self._sink is not None:
            self._sink(self.shard_id, event, old, new, reason)
        return new

    def is_live(self):
        """True while the shard holds code and resources (counts against budgets)."""
        return self.state not in (ABSENT, BROKEN)
