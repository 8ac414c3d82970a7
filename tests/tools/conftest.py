"""Fixtures for the board tools: a simulated board on a pty and a broker
deployed by `capshard broker` (TLS, passwords, ACLs). Real processes, always
stopped afterwards."""

import pytest
from boardtools import SimProcess

from capshard.broker import free_port
from capshard.deploy_broker import Deployment


@pytest.fixture
def simboard(tmp_path):
    """Start simulated boards: simboard(heap_kb=...) -> SimProcess."""
    boards = []

    def start(heap_kb=128, name="board", link=None):
        b = SimProcess(tmp_path / name, heap_kb, link)
        boards.append(b)
        return b

    yield start
    for b in boards:
        b.stop()


@pytest.fixture
def deployed_broker(tmp_path):
    dep = Deployment.init(str(tmp_path / "broker"), port=free_port())
    dep.start()
    try:
        yield dep
    finally:
        dep.stop()
