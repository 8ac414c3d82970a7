"""Fixtures for the provider service tests: a real PostgreSQL server of our
own (tests/pgserver.py), a fresh store per test on SQLite and on
PostgreSQL, and real device agents."""

import os

import pytest

from capshard import localdev
from capshard.keys import Keystore
from capshard.service.store import open_store
from pgserver import PgServer, fresh_db

DATA = os.path.join(os.path.dirname(__file__), "data")
CATALOG = os.path.join(DATA, "catalog.toml")
AGREEMENTS = os.path.join(DATA, "agreements.toml")


@pytest.fixture(scope="session")
def pg_server():
    server = PgServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A URL to an empty fleet store, once per backend."""
    if request.param == "sqlite":
        return str(tmp_path / "fleet.sqlite")
    return fresh_db(request.getfixturevalue("pg_server"))


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def agents(tmp_path, broker):
    """start(device_id, runtime, keystore) -> process of a real device agent."""
    procs = []

    def start(device_id, runtime, keystore, heap_kb=256, traffic=None):
        d = str(tmp_path / device_id)
        if not os.path.exists(os.path.join(d, "device.json")):
            localdev.provision_dir(d, keystore, device_id, broker.host, broker.port,
                                   board_overrides={"traffic_sources": []})
        p = localdev.spawn_agent(runtime, d, heap_kb=heap_kb)
        procs.append(p)
        return p

    yield start
    for p in procs:
        localdev.stop(p)


@pytest.fixture
def keystore():
    return Keystore()
