"""Fixtures for the provider service tests: a real PostgreSQL server of our
own (initdb in a temp dir, a free loopback port), a fresh store per test on
SQLite and on PostgreSQL, and real device agents."""

import glob
import itertools
import os
import shutil
import subprocess
import tempfile

import pytest

from capshard import localdev
from capshard.broker import free_port
from capshard.keys import Keystore
from capshard.paths import REPO_ROOT
from capshard.service.store import open_store

DATA = os.path.join(os.path.dirname(__file__), "data")
CATALOG = os.path.join(DATA, "catalog.toml")
AGREEMENTS = os.path.join(DATA, "agreements.toml")


def _pg_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not found:
        subprocess.run(["sh", os.path.join(REPO_ROOT, "tools", "setup", "postgresql.sh")], check=True)
        return _pg_bin()
    return os.path.dirname(found[-1])


class _PgServer:
    """initdb + pg_ctl as the postgres user when we are root (the server
    refuses to run as root)."""

    def __init__(self):
        self.bin = _pg_bin()
        self.dir = tempfile.mkdtemp(prefix="capshard-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.as_user = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args):
        subprocess.run(self.as_user + [os.path.join(self.bin, args[0]), *args[1:]], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.dir)

    def start(self):
        self._run("initdb", "-D", self.data, "-U", "capshard", "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", self.data, "-o", opts, "-l", os.path.join(self.dir, "server.log"),
                  "-w", "-t", "30", "start")
        return self

    def url(self, db="postgres"):
        return f"postgresql://capshard@127.0.0.1:{self.port}/{db}"

    def stop(self):
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    server = _PgServer().start()
    yield server
    server.stop()


_db_names = itertools.count(1)


def _fresh_pg_db(server):
    import psycopg
    name = f"fleet_{os.getpid()}_{next(_db_names)}"
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A URL to an empty fleet store, once per backend."""
    if request.param == "sqlite":
        return str(tmp_path / "fleet.sqlite")
    return _fresh_pg_db(request.getfixturevalue("pg_server"))


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
