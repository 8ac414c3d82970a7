"""Waiting in tests for something another process or thread brings about."""

import time


def wait_until(predicate, timeout, interval=0.05):
    """The first truthy value of ``predicate()`` within ``timeout`` seconds,
    else its value at the deadline (falsy): assert on what this returns."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
