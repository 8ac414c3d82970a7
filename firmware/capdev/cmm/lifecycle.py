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

# (state, event) -> next state, one " state:event>next" per transition.
# Anything not listed is refused. One string, not a dict of tuples: in a
# ROMFS image it stays in flash (~40 B of heap against ~800 B as a dict).
TRANSITIONS = (
    " absent:load>loaded"
    " loaded:start>starting"
    " loaded:unload>absent"
    " starting:started>running"
    " starting:fail>errored"  # constructor, configure() or start() raised
    " running:stop>stopping"
    " running:fail>errored"  # step/health raised, or a governor limit hit
    " stopping:stopped>stopped"
    " stopping:fail>errored"  # stop() itself raised
    " stopped:start>starting"
    " stopped:unload>absent"
    " errored:restart>starting"
    " errored:give_up>broken"
    " errored:unload>absent"
    # Broken stays broken "until told otherwise": only an explicit reset
    # (a new activate or a deactivate from the provider) leaves it.
    " broken:reset>absent"
    " "
)


def next_state(state, event):
    """The state ``event`` leads to from ``state``, or None when refused."""
    at = TRANSITIONS.find(" " + state + ":" + event + ">")
    if at < 0:
        return None
    at += len(state) + len(event) + 3
    for name in STATES:  # the constant itself, not a new string per transition
        if TRANSITIONS.startswith(name + " ", at):
            return name
    return None


class LifecycleError(ValueError):
    """An event that the current state does not allow."""


class Lifecycle:
    """The state of one shard. ``sink(shard_id, event, old, new, reason)`` sees
    every transition."""

    def __init__(self, shard_id, sink=None):
        self.shard_id = shard_id
        self.state = ABSENT
        self._sink = sink

    def fire(self, event, reason=""):
        new = next_state(self.state, event)
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
        return self.state != ABSENT and self.state != BROKEN
