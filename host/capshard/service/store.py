"""The fleet store: devices (desired and reported profiles, needs, health),
agreements, the instruction log and an event log, in SQL.

SQLite (stdlib) is the embedded default; PostgreSQL (psycopg 3) is for several
provider processes sharing one fleet. Both run the same statements (written
with ``?`` placeholders) and the same migrations. Every method is one short
transaction, so another process always sees a consistent fleet; inside
``batch()`` the calls of one thread join a single transaction instead (group
commit: one commit for many messages' writes).

Desired-state writes use optimistic concurrency: the writer names the version
it read, and a write against any other version raises StaleWrite.
"""

import os
import threading
import time
from contextlib import contextmanager

import orjson

from . import migrations

# instruction states (modelled on AWS IoT Jobs executions)
QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, REJECTED, TIMED_OUT = (
    "QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT")
INSTRUCTION_STATES = (QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, REJECTED, TIMED_OUT)
OPEN_STATES = (QUEUED, IN_PROGRESS)

# pending reconciliation work on a device (bits)
WORK_SYNC = 1      # send the full desired state
WORK_REPLAN = 2    # run the allocator again
WORK_CHECK = 4     # compare reported with desired; repair a drift

DEFAULT_SQLITE = "capshard-fleet.sqlite"
_JSON_COLUMNS = {"birth", "desired", "reported", "needs", "health", "ops", "ack", "explanations"}


class StoreError(RuntimeError):
    """The store cannot be opened or used; the text says why."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (its connection is gone and a new one
    failed). Nothing about the data is wrong: the same work can be done
    again once it is back; the next transaction reconnects."""


class StaleWrite(StoreError):
    """A desired-state write named a version that is no longer current."""

    def __init__(self, device_id, expected, actual):
        super().__init__(f"stale desired-state write for {device_id}: "
                         f"written against version {expected}, current is {actual}")
        self.device_id, self.expected, self.actual = device_id, expected, actual


def store_url(url=None):
    """The store URL in force: ``url``, else $CAPSHARD_DB, else capshard-fleet.sqlite."""
    return url or os.environ.get("CAPSHARD_DB") or DEFAULT_SQLITE


def sqlite_path(url):
    """The file of a SQLite store URL (``:memory:`` included), or None for PostgreSQL."""
    if url.startswith(("postgresql://", "postgres://")):
        return None
    return url[len("sqlite:///"):] if url.startswith("sqlite:///") else url


def open_store(url=None, migrate=True):
    """A store from a URL: ``postgresql://...``, ``sqlite:///path``, a plain
    path, or ``:memory:``. Default: $CAPSHARD_DB, else capshard-fleet.sqlite."""
    url = store_url(url)
    path = sqlite_path(url)
    if path is None:
        store = FleetStore(_PostgresBackend(url), url)
    else:
        store = FleetStore(_SqliteBackend(path), url)
    if migrate:
        store.migrate()
    return store


class _SqliteBackend:
    dialect = "sqlite"

    def __init__(self, path):
        import sqlite3
        if path != ":memory:" and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            # a bigger statement cache: the bulk reads' IN (...) lists vary in length
            self.conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False,
                                        cached_statements=512)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open SQLite fleet store {path!r}: {e}") from None
        self.conn.row_factory = sqlite3.Row
        if path != ":memory:":
            self.conn.execute("PRAGMA journal_mode=WAL")  # readers (the CLI) never block the service
            # In WAL mode, NORMAL syncs at checkpoints, not at every commit: a
            # crash of the process loses nothing, a power cut at most the last
            # commits (the devices' retained state and next reports restore them).
            self.conn.execute("PRAGMA synchronous=NORMAL")
        self.errors = (sqlite3.Error,)

    @contextmanager
    def transaction(self):
        cur = self.conn.cursor()
        cur.row_factory = None   # plain tuples: _Cursor makes the dicts, names looked up once per query
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield _Cursor(cur, "?")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def lock_schema(self, cur):
        pass  # BEGIN IMMEDIATE already serialises writers

    def lost(self):
        return False  # a file: nothing to lose

    def close(self):
        self.conn.close()


class _PostgresBackend:
    dialect = "postgresql"

    def __init__(self, url):
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError:
            raise StoreError("PostgreSQL fleet store needs psycopg: pip install 'psycopg[binary]'") from None
        self._connect = lambda: psycopg.connect(url, autocommit=True, row_factory=dict_row)
        try:
            self.conn = self._connect()
        except psycopg.Error as e:
            raise StoreError(f"cannot connect to PostgreSQL fleet store: {e}") from None
        self.errors = (psycopg.Error,)

    def lost(self):
        """Is the connection gone (server restarted, failed over, session killed)?"""
        return self.conn.closed

    @contextmanager
    def transaction(self):
        # A lost connection stays lost in psycopg: open a new one (a restarted
        # or failed-over server behind the same DSN) before giving up.
        if self.conn.closed:
            self.conn = self._connect()
        with self.conn.transaction():
            with self.conn.cursor() as cur:
                yield _Cursor(cur, "%s")

    def lock_schema(self, cur):
        # two providers starting together must not both run a migration
        cur.execute("SELECT pg_advisory_xact_lock(7142026)")

    def close(self):
        self.conn.close()


class _Cursor:
    """Statements use ``?``; PostgreSQL wants ``%s``."""

    def __init__(self, cur, mark):
        self.cur, self.mark = cur, mark

    def execute(self, sql, params=()):
        if self.mark != "?":
            sql = sql.replace("?", self.mark)
        self.cur.execute(sql, tuple(params))
        return self

    def executemany(self, sql, rows):
        """One statement over many rows (psycopg pipelines them: one round trip)."""
        if self.mark != "?":
            sql = sql.replace("?", self.mark)
        self.cur.executemany(sql, rows)
        return self

    @property
    def rowcount(self):
        return self.cur.rowcount

    def one(self):
        row = self.cur.fetchone()
        return None if row is None else self._reader()(row)

    def all(self):
        rows = self.cur.fetchall()
        if not rows:
            return []
        read = self._reader()
        return [read(r) for r in rows]

    def _reader(self):
        """row -> dict for the query just run, JSON columns decoded. PostgreSQL
        (dict_row) gives dicts; SQLite gives tuples, named from the
        description once per query, not looked up by name per column."""
        names = tuple(d[0] for d in self.cur.description)
        json_names = _json_names(names)
        if self.mark == "?":
            def read(row):
                out = dict(zip(names, row))
                for k in json_names:
                    if out[k] is not None:
                        out[k] = _decode(out[k])
                return out
        else:
            def read(row):
                out = dict(row)
                for k in json_names:
                    if out[k] is not None:
                        out[k] = _decode(out[k])
                return out
        return read


# Pending work lives in device_work (migration 3), a row per device with work
# asked for: requests and claims write a few bytes there, not the devices row.
_REQUEST_WORK = ("INSERT INTO device_work (device_id, pending, pending_after) VALUES (?, ?, ?) "
                 "ON CONFLICT (device_id) DO UPDATE SET pending_after = CASE WHEN device_work.pending = 0 "
                 "OR device_work.pending_after IS NULL OR device_work.pending_after > excluded.pending_after "
                 "THEN excluded.pending_after ELSE device_work.pending_after END, "
                 "pending = device_work.pending | excluded.pending")
# PostgreSQL only (SQLite has no INSERT in a WITH): the device row, if
# missing, and the work request in one statement.
_ENSURE_AND_REQUEST_WORK = ("WITH device AS (INSERT INTO devices (device_id) VALUES (?) "
                            "ON CONFLICT (device_id) DO NOTHING) " + _REQUEST_WORK)
_CLAIM_WORK = "DELETE FROM device_work WHERE device_id = ? AND pending = ? AND pending_after = ?"
# A device as read: its row, its tier and its pending work (none: 0 and NULL).
_DEVICE_FROM = ("devices d LEFT JOIN agreements a ON a.device_id = d.device_id "
                "LEFT JOIN device_work w ON w.device_id = d.device_id")
_WORK_COLUMNS = "COALESCE(w.pending, 0) AS pending, w.pending_after"
_LEAN_DEVICE_COLUMNS = ", ".join("d." + c for c in (
    "device_id", "online", "birth", "desired", "desired_version", "desired_expires_at", "reported", "reported_seq",
    "inst_seq", "needs", "last_seen", "repaired_version")) + ", COALESCE(w.pending, 0) AS pending"
_DUE_WORK = ("SELECT w.device_id, w.pending, w.pending_after FROM device_work w JOIN devices d "
             "ON d.device_id = w.device_id WHERE w.pending <> 0 AND d.online = 1 AND w.pending_after <= ? "
             "ORDER BY w.pending_after LIMIT ?")
# What finish() returns of an instruction: all but its ops, the largest JSON
# to decode, which no caller reads there.
_FINISHED_COLUMNS = ("id", "device_id", "seq", "desired_version", "tier", "full_state", "iat", "ttl_s", "state",
                     "attempts", "created_at", "sent_at", "next_attempt_at", "deadline", "superseded_by", "acked_at",
                     "ack", "reason")
_FINISHED_SELECT = ", ".join(_FINISHED_COLUMNS)
_FINISHED_RETURNING = ", ".join("old." + c for c in _FINISHED_COLUMNS)
_ADD_EVENT = "INSERT INTO events (t, device_id, kind, text) VALUES (?, ?, ?, ?)"
_MARK_SENT = ("UPDATE instructions SET attempts = attempts + 1, sent_at = COALESCE(sent_at, ?), "
              "next_attempt_at = CASE WHEN state IN (?, ?) THEN ? ELSE next_attempt_at END, "
              "state = CASE WHEN state IN (?, ?) THEN ? ELSE state END WHERE id = ?")


_json_names_of = {}   # column names of a query -> those holding JSON (few distinct queries)


def _json_names(names):
    found = _json_names_of.get(names)
    if found is None:
        found = _json_names_of[names] = tuple(k for k in names if k in _JSON_COLUMNS)
    return found


# orjson: about 10x faster than the json module at encoding the profiles,
# reports and acks every report writes, and 3x at decoding them
# (docs/performance.md). Keys sorted, so equal values give equal text;
# non-string keys become strings, as json.dumps makes them.
_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
_decode = orjson.loads


def _json(value):
    return None if value is None else orjson.dumps(value, option=_ORJSON_OPTIONS).decode()


class _Joined:
    """tx() inside this thread's open transaction: its cursor. A database
    error marks the transaction failed (PostgreSQL has aborted it), so the
    batch must not commit."""
    __slots__ = ("store",)

    def __init__(self, store):
        self.store = store

    def __enter__(self):
        return self.store._cur

    def __exit__(self, kind, error, tb):
        store = self.store
        if kind is not None and issubclass(kind, store.backend.errors):
            store._failed = error
            raise store.error(error) from None
        return False


class FleetStore:
    def __init__(self, backend, url):
        self.backend = backend
        self.dialect = backend.dialect
        self.url = url
        self._lock = threading.RLock()  # one connection, shared by the service's threads
        self._cur = None        # the open transaction's cursor (only its thread holds the lock)
        self._owner = None      # that thread
        self._failed = None     # a database error inside the open batch
        # Inside a transaction, writes nothing reads back before the commit
        # wait here and go in one executemany each when it commits (one
        # round trip on PostgreSQL, not one per message).
        self._events = []       # (t, device_id, kind, text)
        self._work = {}         # device_id -> [kinds, after]
        self._joined = _Joined(self)

    def tx(self):
        """The open transaction of this thread (joined), else a new one."""
        # Only the owner sees its own id here, and it holds the lock: no race.
        # Joining is most calls inside a batch, so it is a plain object, not a
        # generator-based context manager.
        if self._owner == threading.get_ident():
            return self._joined
        return self._new_tx()

    @contextmanager
    def _new_tx(self):
        with self._lock:
            try:
                with self.backend.transaction() as cur:
                    self._cur, self._owner, self._failed = cur, threading.get_ident(), None
                    try:
                        yield cur
                        self._flush(cur)
                    finally:
                        self._cur = self._owner = None
                        self._events, self._work = [], {}
            except self.backend.errors as e:
                raise self.error(e) from None

    def error(self, db_error):
        """The StoreError for a database error: StoreUnavailable when the
        connection went with it (the work can be done again later)."""
        kind = StoreUnavailable if self.backend.lost() else StoreError
        return kind(f"fleet store ({self.dialect}): {db_error}")

    def flush_work(self):
        """Write the work requests kept so far in this transaction now. A
        batch that goes device by device calls it after each device, so it
        takes the row locks in its own order: device by device, the devices
        row, then the device_work row (providers sharing a PostgreSQL store
        then never wait on each other in a circle; claim_due_work skips
        locked work rows rather than waiting). SQLite has no row locks
        (BEGIN IMMEDIATE holds the whole database), so there they wait for
        the commit: two statements per batch, not per device."""
        if self.dialect != "sqlite":
            self._write_work()

    def _write_work(self):
        if self._work and self.in_transaction():
            items, self._work = sorted(self._work.items()), {}
            with self.tx() as cur:
                if self.dialect == "postgresql":
                    # One statement (one round trip) per device: its row, then its work.
                    cur.executemany(_ENSURE_AND_REQUEST_WORK,
                                    [(d, d, kinds, after) for d, (kinds, after) in items])
                    return
                cur.executemany("INSERT INTO devices (device_id) VALUES (?) ON CONFLICT (device_id) DO NOTHING",
                                [(d,) for d, _ in items])
                cur.executemany(_REQUEST_WORK, [(d, kinds, after) for d, (kinds, after) in items])

    def _flush(self, cur):
        self._write_work()
        if self._events:
            cur.executemany(_ADD_EVENT, self._events)

    def in_transaction(self):
        """Is this thread inside a transaction (a batch) of this store?"""
        return self._owner == threading.get_ident()

    @contextmanager
    def batch(self):
        """Every store call of this thread inside the block is one transaction:
        all of it commits, or (StoreError) none of it. Other threads wait for
        the store meanwhile, so keep the block to recording (no planning)."""
        with self.tx():
            yield self
            if self._failed is not None:
                err, self._failed = self._failed, None
                # raised inside the transaction: it rolls back
                raise self.error(f"batch rolled back: {err}")

    def close(self):
        with self._lock:
            self.backend.close()

    def __repr__(self):
        return f"FleetStore({self.dialect})"

    # ---- schema -------------------------------------------------------------
    def migrate(self):
        """Apply the migrations this store lacks; returns the versions applied."""
        applied = []
        with self.tx() as cur:
            self.backend.lock_schema(cur)
            cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                        "description TEXT NOT NULL, applied_at %s NOT NULL)"
                        % migrations.DIALECT_WORDS[self.dialect]["real"])
            have = {r["version"] for r in cur.execute("SELECT version FROM schema_migrations").all()}
            if have and max(have) > migrations.LATEST:
                raise StoreError(f"fleet store schema version {max(have)} is newer than this "
                                 f"capshard ({migrations.LATEST}): upgrade capshard")
            for m in migrations.MIGRATIONS:
                if m[0] in have:
                    continue
                for stmt in migrations.statements(self.dialect, m):
                    cur.execute(stmt)
                cur.execute("INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                            (m[0], m[1], time.time()))
                applied.append(m[0])
        return applied

    def schema_version(self):
        with self.tx() as cur:
            row = cur.execute("SELECT MAX(version) AS v FROM schema_migrations").one()
        return row["v"] or 0

    # ---- devices ------------------------------------------------------------
    def _ensure(self, cur, device_id):
        cur.execute("INSERT INTO devices (device_id) VALUES (?) ON CONFLICT (device_id) DO NOTHING", (device_id,))

    def _update_device(self, cur, device_id, sql, params):
        """An UPDATE ... WHERE device_id = ?: the row is created first only
        when missing (one statement, not two, for a known device)."""
        if cur.execute(sql, params).rowcount == 0:
            self._ensure(cur, device_id)
            cur.execute(sql, params)

    def ensure_device(self, device_id):
        with self.tx() as cur:
            self._ensure(cur, device_id)

    def get_device(self, device_id):
        with self.tx() as cur:
            return cur.execute("SELECT d.*, a.tier, %s FROM %s WHERE d.device_id = ?" % (_WORK_COLUMNS, _DEVICE_FROM),
                               (device_id,)).one()

    def get_devices(self, device_ids, lean=False):
        """device id -> row (as get_device) for those that exist: one query.
        ``lean``: only what a DeviceRecord and the reconciler read; the plan
        explanations and the health report (the largest JSON to decode, and
        unused there) are left out."""
        if not device_ids:
            return {}
        with self.tx() as cur:
            rows = cur.execute("SELECT %s, a.tier FROM %s WHERE d.device_id IN (%s)"
                               % (_LEAN_DEVICE_COLUMNS if lean else "d.*, " + _WORK_COLUMNS, _DEVICE_FROM,
                                  ", ".join("?" * len(device_ids))),
                               list(device_ids)).all()
        return {r["device_id"]: r for r in rows}

    def list_devices(self):
        with self.tx() as cur:
            return cur.execute("SELECT d.*, a.tier, %s FROM %s ORDER BY d.device_id"
                               % (_WORK_COLUMNS, _DEVICE_FROM)).all()

    def count_online(self):
        with self.tx() as cur:
            return cur.execute("SELECT COUNT(*) AS n FROM devices WHERE online = 1").one()["n"]

    def record_birth(self, device_id, birth, now):
        """The device (re)connected: it is online, and our sequence counter
        never falls behind what it has applied."""
        with self.tx() as cur:
            self._update_device(cur, device_id,
                                "UPDATE devices SET online = 1, board = ?, runtime = ?, birth = ?, born_at = ?, "
                                "last_seen = ?, inst_seq = CASE WHEN inst_seq < ? THEN ? ELSE inst_seq END "
                                "WHERE device_id = ?",
                                (birth.get("board"), birth.get("runtime"), _json(birth), now, now,
                                 int(birth.get("last_seq", 0)), int(birth.get("last_seq", 0)), device_id))

    def set_online(self, device_id, online, now):
        with self.tx() as cur:
            self._update_device(cur, device_id, "UPDATE devices SET online = ?, last_seen = ? WHERE device_id = ?",
                                (1 if online else 0, now, device_id))

    def record_reported(self, device_id, profile, seq, now):
        """Returns what birth_of would say (the row at hand tells it: no
        second statement)."""
        # Our sequence counter never falls behind what the device applied,
        # even when we learn of it from its retained state, not a birth.
        sql = ("UPDATE devices SET online = 1, reported = ?, reported_seq = ?, reported_at = ?, "
               "last_seen = ?, inst_seq = CASE WHEN inst_seq < ? THEN ? ELSE inst_seq END "
               "WHERE device_id = ? RETURNING birth IS NOT NULL AS born, born_at")
        params = (_json(profile), seq, now, now, int(seq), int(seq), device_id)
        with self.tx() as cur:
            row = cur.execute(sql, params).one()
            if row is None:
                self._ensure(cur, device_id)
                row = cur.execute(sql, params).one()
        return bool(row["born"]), row["born_at"]

    def birth_of(self, device_id):
        """(has a birth, born_at) of a device, without reading its whole record."""
        with self.tx() as cur:
            row = cur.execute("SELECT birth IS NOT NULL AS born, born_at FROM devices WHERE device_id = ?",
                              (device_id,)).one()
        return (bool(row["born"]), row["born_at"]) if row else (False, None)

    def record_needs(self, device_id, report, now):
        """Store a QoS report; returns the previous one (None if none)."""
        if self.dialect == "postgresql":
            # one round trip: the old value comes from the locked row itself
            sql = ("UPDATE devices d SET needs = ?, needs_at = ?, last_seen = ? FROM (SELECT device_id, needs "
                   "FROM devices WHERE device_id = ? FOR UPDATE) o WHERE d.device_id = o.device_id RETURNING o.needs")
            params = (_json(report), now, now, device_id)
            with self.tx() as cur:
                row = cur.execute(sql, params).one()
                if row is None:
                    self._ensure(cur, device_id)
                    cur.execute(sql, params)
            return row["needs"] if row else None
        with self.tx() as cur:
            row = cur.execute("SELECT needs FROM devices WHERE device_id = ?", (device_id,)).one()
            if row is None:
                self._ensure(cur, device_id)
            cur.execute("UPDATE devices SET needs = ?, needs_at = ?, last_seen = ? WHERE device_id = ?",
                        (_json(report), now, now, device_id))
        return row["needs"] if row else None

    def record_health(self, device_id, health, now):
        with self.tx() as cur:
            self._update_device(cur, device_id,
                                "UPDATE devices SET health = ?, health_at = ?, last_seen = ? WHERE device_id = ?",
                                (_json(health), now, now, device_id))

    def write_desired(self, device_id, profile, expected_version, now, expires_at=None, explanations=None):
        """Replace the desired profile if it is still at ``expected_version``;
        returns the new version, or raises StaleWrite."""
        return self._write_desired(device_id, profile, expected_version, now, expires_at, explanations,
                                   take_seq=False)["desired_version"]

    def write_desired_next_seq(self, device_id, profile, expected_version, now, expires_at=None,
                               explanations=None):
        """write_desired, then next_seq, in one statement (the reconciler's
        new plan and the instruction that carries it): returns (version, seq).
        A stale write takes no sequence number."""
        row = self._write_desired(device_id, profile, expected_version, now, expires_at, explanations,
                                  take_seq=True)
        return row["desired_version"], row["inst_seq"]

    def _write_desired(self, device_id, profile, expected_version, now, expires_at, explanations, take_seq):
        sql = ("UPDATE devices SET desired = ?, desired_version = desired_version + 1, desired_at = ?, "
               "desired_expires_at = ?, explanations = ?%s WHERE device_id = ? AND desired_version = ? "
               "RETURNING desired_version%s" % ((", inst_seq = inst_seq + 1", ", inst_seq") if take_seq else ("", "")))
        params = (_json(profile), now, expires_at, _json(explanations), device_id, expected_version)
        with self.tx() as cur:
            row = cur.execute(sql, params).one()
            if row is None:
                self._ensure(cur, device_id)
                row = cur.execute(sql, params).one()
            if row is not None:
                return row
            actual = cur.execute("SELECT desired_version FROM devices WHERE device_id = ?", (device_id,)).one()
        raise StaleWrite(device_id, expected_version, actual["desired_version"])

    def next_seq(self, device_id):
        sql = "UPDATE devices SET inst_seq = inst_seq + 1 WHERE device_id = ? RETURNING inst_seq"
        with self.tx() as cur:
            row = cur.execute(sql, (device_id,)).one()
            if row is None:
                self._ensure(cur, device_id)
                row = cur.execute(sql, (device_id,)).one()
            return row["inst_seq"]

    def mark_repaired(self, device_id, version):
        with self.tx() as cur:
            cur.execute("UPDATE devices SET repaired_version = ? WHERE device_id = ?", (version, device_id))

    # ---- reconciliation work -------------------------------------------------
    def request_work(self, device_id, kinds, after):
        """Add work bits to a device; it becomes due at ``after`` (the earliest
        of what was asked)."""
        if self.in_transaction():
            # kept until the commit, merged per device: what two requests in a row would leave
            w = self._work.get(device_id)
            if w is None:
                self._work[device_id] = [kinds, after]
            else:
                w[0] |= kinds
                w[1] = min(w[1], after)
            return
        with self.tx() as cur:
            self._ensure(cur, device_id)
            cur.execute(_REQUEST_WORK, (device_id, kinds, after))

    def request_work_all(self, kinds, after_fn, online_only=True):
        ids = [d["device_id"] for d in self.list_devices() if d["online"] or not online_only]
        for device_id in ids:
            self.request_work(device_id, kinds, after_fn())
        return ids

    def due_work(self, now, limit=50):
        with self.tx() as cur:
            return cur.execute(_DUE_WORK, (now, limit)).all()

    def claim_due_work(self, now, limit):
        """Take up to ``limit`` devices' due work at once; returns their
        (device_id, pending, pending_after) rows, ordered by device id. On
        PostgreSQL work rows another provider has locked are skipped, not
        waited for (only those are locked: the devices rows are just read);
        in SQLite the transaction is the only writer anyway."""
        if limit <= 0:
            return []
        with self.tx() as cur:
            if self.dialect == "postgresql":
                rows = cur.execute(
                    "WITH due AS (%s FOR UPDATE OF w SKIP LOCKED) DELETE FROM device_work w USING due "
                    "WHERE w.device_id = due.device_id RETURNING due.device_id, due.pending, due.pending_after"
                    % _DUE_WORK, (now, limit)).all()
            else:
                rows = self.due_work(now, limit)
                if rows:   # claim_work for each, as one executemany
                    cur.executemany(_CLAIM_WORK, [(r["device_id"], r["pending"], r["pending_after"]) for r in rows])
        return sorted(rows, key=lambda r: r["device_id"])

    def claim_work(self, device_id, pending, pending_after):
        """Take the work of a device if nobody changed or took it meanwhile."""
        with self.tx() as cur:
            return cur.execute(_CLAIM_WORK, (device_id, pending, pending_after)).rowcount == 1

    def expiring(self, before):
        """Online devices whose temporary profile lapses before ``before`` and
        that have no work pending."""
        with self.tx() as cur:
            return [r["device_id"] for r in cur.execute(
                "SELECT d.device_id FROM devices d LEFT JOIN device_work w ON w.device_id = d.device_id "
                "WHERE d.online = 1 AND COALESCE(w.pending, 0) = 0 AND "
                "d.desired_expires_at IS NOT NULL AND d.desired_expires_at <= ?", (before,)).all()]

    # ---- agreements ---------------------------------------------------------
    def assign_agreement(self, device_id, tier, now, by=None):
        """Returns True when the device's tier changed."""
        with self.tx() as cur:
            self._ensure(cur, device_id)
            old = cur.execute("SELECT tier FROM agreements WHERE device_id = ?", (device_id,)).one()
            if old and old["tier"] == tier:
                return False
            cur.execute("INSERT INTO agreements (device_id, tier, assigned_at, assigned_by) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (device_id) DO UPDATE SET tier = excluded.tier, "
                        "assigned_at = excluded.assigned_at, assigned_by = excluded.assigned_by",
                        (device_id, tier, now, by))
            return True

    def agreement(self, device_id):
        with self.tx() as cur:
            row = cur.execute("SELECT tier FROM agreements WHERE device_id = ?", (device_id,)).one()
        return row["tier"] if row else None

    # ---- instruction log ----------------------------------------------------
    def add_instruction(self, inst, desired_version, tier, now, deadline, state=QUEUED, publish_by=None):
        """``publish_by``: when a QUEUED instruction counts as due for a retry
        if it was never marked sent (its publisher died between the commit
        and the publish); None leaves it to the caller."""
        with self.tx() as cur:
            cur.execute("INSERT INTO instructions (id, device_id, seq, desired_version, tier, full_state, ops, "
                        "iat, ttl_s, state, created_at, deadline, next_attempt_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (inst["id"], inst["dev"], inst["seq"], desired_version, tier, 1 if inst["full"] else 0,
                         _json(inst["ops"]), inst["iat"], inst["ttl_s"], state, now, deadline, publish_by))

    def supersede_open(self, device_id, new_id):
        """Older open instructions of a device stop being retried: ``new_id``
        (a full state) replaces them. They time out unless acked first."""
        with self.tx() as cur:
            cur.execute("UPDATE instructions SET superseded_by = ? WHERE device_id = ? AND id <> ? "
                        "AND state IN (?, ?) AND superseded_by IS NULL",
                        (new_id, device_id, new_id, QUEUED, IN_PROGRESS))

    def mark_sent(self, inst_id, now, next_attempt_at):
        """Published: counts the attempt. An ack that came back before this
        was recorded (a batch marks its instructions after publishing them
        all) keeps its final state; only the send time is filled in."""
        with self.tx() as cur:
            cur.execute(_MARK_SENT, (now, QUEUED, IN_PROGRESS, next_attempt_at, QUEUED, IN_PROGRESS, IN_PROGRESS,
                                     inst_id))

    def mark_sent_many(self, sent, now):
        """mark_sent for many instructions published together, ``sent`` being
        [(id, next_attempt_at)]: one executemany."""
        if not sent:
            return
        with self.tx() as cur:
            cur.executemany(_MARK_SENT, [(now, QUEUED, IN_PROGRESS, nxt, QUEUED, IN_PROGRESS, IN_PROGRESS, i)
                                         for i, nxt in sent])

    def claim_retry(self, inst_id, expected_next, new_next):
        with self.tx() as cur:
            return cur.execute("UPDATE instructions SET next_attempt_at = ? WHERE id = ? AND state IN (?, ?) "
                               "AND next_attempt_at = ?",
                               (new_next, inst_id, QUEUED, IN_PROGRESS, expected_next)).rowcount == 1

    def finish(self, inst_id, state, now, reason="", ack=None, device_id=None):
        """Close an instruction; only an open one changes. Returns the row
        as it was before, but for its ops (None when unknown or already
        closed)."""
        if self.dialect == "postgresql":
            # one round trip: the row as it was comes from the locked row itself
            with self.tx() as cur:
                return cur.execute(
                    "UPDATE instructions i SET state = ?, reason = ?, ack = ?, acked_at = ?, next_attempt_at = NULL "
                    "FROM (SELECT * FROM instructions WHERE id = ? FOR UPDATE) old WHERE i.id = old.id "
                    "AND old.state IN (?, ?) AND (? = '' OR old.device_id = ?) RETURNING %s"
                    % _FINISHED_RETURNING,
                    (state, reason, _json(ack), now if ack is not None else None, inst_id, QUEUED, IN_PROGRESS,
                     device_id or "", device_id or "")).one()
        with self.tx() as cur:
            row = cur.execute("SELECT %s FROM instructions WHERE id = ?" % _FINISHED_SELECT,
                              (inst_id,)).one()
            if row is None or row["state"] not in OPEN_STATES or (device_id and row["device_id"] != device_id):
                return None
            cur.execute("UPDATE instructions SET state = ?, reason = ?, ack = ?, acked_at = ?, "
                        "next_attempt_at = NULL WHERE id = ?",
                        (state, reason, _json(ack), now if ack is not None else None, inst_id))
            return row

    def get_instruction(self, inst_id):
        with self.tx() as cur:
            return cur.execute("SELECT * FROM instructions WHERE id = ?", (inst_id,)).one()

    def instructions(self, device_id=None, states=None, limit=None, newest_first=False):
        sql, params = "SELECT * FROM instructions WHERE 1 = 1", []
        if device_id:
            sql += " AND device_id = ?"
            params.append(device_id)
        if states:
            sql += " AND state IN (%s)" % ", ".join("?" * len(states))
            params.extend(states)
        sql += " ORDER BY created_at DESC, seq DESC" if newest_first else " ORDER BY created_at, seq"
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        with self.tx() as cur:
            return cur.execute(sql, params).all()

    def open_unsuperseded(self, device_id):
        with self.tx() as cur:
            return cur.execute("SELECT * FROM instructions WHERE device_id = ? AND state IN (?, ?) "
                               "AND superseded_by IS NULL", (device_id, QUEUED, IN_PROGRESS)).all()

    def with_open_unsuperseded(self, device_ids):
        """Those of the devices with an instruction in flight (open, not superseded)."""
        if not device_ids:
            return set()
        with self.tx() as cur:
            return {r["device_id"] for r in cur.execute(
                "SELECT DISTINCT device_id FROM instructions WHERE device_id IN (%s) AND state IN (?, ?) "
                "AND superseded_by IS NULL" % ", ".join("?" * len(device_ids)),
                list(device_ids) + [QUEUED, IN_PROGRESS]).all()}

    def due_retries(self, now, limit=100):
        """Open instructions whose next attempt is due: sent and not acked, or
        committed and never sent (see add_instruction's ``publish_by``)."""
        with self.tx() as cur:
            return cur.execute("SELECT * FROM instructions WHERE state IN (?, ?) AND next_attempt_at <= ? "
                               "ORDER BY next_attempt_at LIMIT ?", (QUEUED, IN_PROGRESS, now, limit)).all()

    def outcome_counts(self):
        with self.tx() as cur:
            return {r["state"]: r["n"] for r in cur.execute(
                "SELECT state, COUNT(*) AS n FROM instructions GROUP BY state").all()}

    # ---- events -------------------------------------------------------------
    def add_event(self, device_id, kind, text, now):
        if self.in_transaction():
            self._events.append((now, device_id, kind, text))   # written at the commit, in order
            return
        with self.tx() as cur:
            cur.execute(_ADD_EVENT, (now, device_id, kind, text))

    def last_event_id(self):
        with self.tx() as cur:
            return cur.execute("SELECT MAX(id) AS n FROM events").one()["n"] or 0

    def events(self, after_id=0, device_id=None, kinds=None, since=None, limit=None):
        sql, params = "SELECT * FROM events WHERE id > ?", [after_id]
        if device_id:
            sql += " AND device_id = ?"
            params.append(device_id)
        if kinds:
            sql += " AND kind IN (%s)" % ", ".join("?" * len(kinds))
            params.extend(kinds)
        if since is not None:
            sql += " AND t >= ?"
            params.append(since)
        sql += " ORDER BY id"
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        with self.tx() as cur:
            return cur.execute(sql, params).all()
