"""The fleet store's PostgreSQL going away (a restart, a failover behind the
same DSN, a killed session): the call in flight fails with
StoreUnavailable, the next one reconnects; the provider holds the device
messages that arrive meanwhile and records them once the server is back."""

import psycopg
import pytest

from capshard.service.fleet import Fleet
from capshard.service.policy import minimal_baseline
from capshard.service.provider import ProviderService
from capshard.service.reconcile import ReconcileOptions
from capshard.service.store import StoreUnavailable, open_store
from fakedevice import FakeDevice
from pgserver import PgServer, fresh_db
from polling import wait_until


def _kill_sessions(server, url):
    """Terminate every session on the database of ``url`` (as an operator, or a
    failover, would); returns how many."""
    with psycopg.connect(server.url(), autocommit=True) as admin:
        return len(admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = %s AND pid <> pg_backend_pid()",
                                 (url.rsplit("/", 1)[1],)).fetchall())


def test_the_store_reconnects_after_its_sessions_are_killed(pg_server):
    url = fresh_db(pg_server)
    store = open_store(url)
    try:
        store.add_event("t", "note", "before", 1.0)
        assert _kill_sessions(pg_server, url) >= 1
        with pytest.raises(StoreUnavailable, match="fleet store"):
            store.add_event("t", "note", "lost with the session", 2.0)
        store.add_event("t", "note", "after", 3.0)   # on a new connection
        assert [e["text"] for e in store.events(device_id="t")] == ["before", "after"]
    finally:
        store.close()


def test_messages_that_arrive_while_postgresql_is_down_are_recorded_when_it_is_back(broker, keystore):
    server = PgServer().start()
    svc = None
    devices = []
    try:
        svc = ProviderService(broker.host, broker.port, keystore, minimal_baseline,
                              fleet=Fleet(open_store(fresh_db(server))),
                              options=ReconcileOptions(birth_jitter_s=0.0)).start()
        for name in ("dev-early", "dev-during"):
            keystore.provision(name)
        early = FakeDevice(broker, "dev-early")
        devices.append(early)
        early.birth()
        assert wait_until(lambda: early.instructions, 10), "no instruction before the outage"

        server.halt()
        during = FakeDevice(broker, "dev-during")
        devices.append(during)
        during.birth()
        assert wait_until(lambda: svc._inbox, 5), "the birth was not held"
        assert not during.instructions

        server.resume()
        assert wait_until(lambda: during.instructions, 30), "the birth held during the outage was lost"
        assert during.instructions[0]["full"]
        assert svc.fleet.device("dev-during").online
    finally:
        for d in devices:
            d.stop()
        if svc:
            svc.stop()
        server.stop()
