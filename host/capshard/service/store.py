"""The fleet store: devices (desired and reported profiles, needs, health),
agreements, the instruction log and an event log, in SQL.

SQLite (stdlib) is the embedded default; PostgreSQL (psycopg 3) is for several
provider processes sharing one fleet. Both run the same statements (written
with ``?`` placeholders) and the same migrations. Every method is one short
transaction, so another process always sees a consistent fleet.

Desired-state writes use optimistic concurrency: the writer names the version
it read, and a write against any other version raises StaleWrite.
"""

import json
import os
import threading
import time
from contextlib import contextmanager

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


class StaleWrite(StoreError):
    """A desired-state write named a version that is no longer current."""

    def __init__(self, device_id, expected, actual):
        super().__init__(f"stale desired-state write for {device_id}: "
                         f"written against version {expected}, current is {actual}")
        self.device_id, self.expected, self.actual = device_id, expected, actual


def open_store(url=None, migrate=True):
    """A store from a URL: ``postgresql://...``, ``sqlite:///path``, a plain
    path, or ``:memory:``. Default: $CAPSHARD_DB, else capshard-fleet.sqlite."""
    url = url or os.environ.get("CAPSHARD_DB") or DEFAULT_SQLITE
    if url.startswith(("postgresql://", "postgres://")):
        store = FleetStore(_PostgresBackend(url), url)
    else:
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url
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
            self.conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
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
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield _Cursor(cur, "?")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def lock_schema(self, cur):
        pass  # BEGIN IMMEDIATE already serialises writers

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
        try:
            self.conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)
        except psycopg.Error as e:
            raise StoreError(f"cannot connect to PostgreSQL fleet store: {e}") from None
        self.errors = (psycopg.Error,)

    @contextmanager
    def transaction(self):
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

    @property
    def rowcount(self):
        return self.cur.rowcount

    def one(self):
        row = self.cur.fetchone()
        return _row(row)

    def all(self):
        return [_row(r) for r in self.cur.fetchall()]


def _row(row):
    if row is None:
        return None
    out = dict(row) if not hasattr(row, "keys") else {k: row[k] for k in row.keys()}
    for k in _JSON_COLUMNS & out.keys():
        if out[k] is not None:
            out[k] = json.loads(out[k])
    return out


def _json(value):
    return None if value is None else json.dumps(value, sort_keys=True)


class FleetStore:
    def __init__(self, backend, url):
        self.backend = backend
        self.dialect = backend.dialect
        self.url = url
        self._lock = threading.RLock()  # one connection, shared by the service's threads

    @contextmanager
    def tx(self):
        with self._lock:
            try:
                with self.backend.transaction() as cur:
                    yield cur
            except self.backend.errors as e:
                raise StoreError(f"fleet store ({self.dialect}): {e}") from None

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

    def ensure_device(self, device_id):
        with self.tx() as cur:
            self._ensure(cur, device_id)

    def get_device(self, device_id):
        with self.tx() as cur:
            return cur.execute("SELECT d.*, a.tier FROM devices d LEFT JOIN agreements a "
                               "ON a.device_id = d.device_id WHERE d.device_id = ?", (device_id,)).one()

    def list_devices(self):
        with self.tx() as cur:
            return cur.execute("SELECT d.*, a.tier FROM devices d LEFT JOIN agreements a "
                               "ON a.device_id = d.device_id ORDER BY d.device_id").all()

    def count_online(self):
        with self.tx() as cur:
            return cur.execute("SELECT COUNT(*) AS n FROM devices WHERE online = 1").one()["n"]

    def record_birth(self, device_id, birth, now):
        """The device (re)connected: it is online, and our sequence counter
        never falls behind what it has applied."""
        with self.tx() as cur:
            self._ensure(cur, device_id)
            cur.execute("UPDATE devices SET online = 1, board = ?, runtime = ?, birth = ?, born_at = ?, "
                        "last_seen = ?, inst_seq = CASE WHEN inst_seq < ? THEN ? ELSE inst_seq END "
                        "WHERE device_id = ?",
                        (birth.get("board"), birth.get("runtime"), _json(birth), now, now,
                         int(birth.get("last_seq", 0)), int(birth.get("last_seq", 0)), device_id))

    def set_online(self, device_id, online, now):
        with self.tx() as cur:
            self._ensure(cur, device_id)
            cur.execute("UPDATE devices SET online = ?, last_seen = ? WHERE device_id = ?",
                        (1 if online else 0, now, device_id))

    def record_reported(self, device_id, profile, seq, now):
        with self.tx() as cur:
            self._ensure(cur, device_id)
            # Our sequence counter never falls behind what the device applied,
            # even when we learn of it from its retained state, not a birth.
            cur.execute("UPDATE devices SET online = 1, reported = ?, reported_seq = ?, reported_at = ?, "
                        "last_seen = ?, inst_seq = CASE WHEN inst_seq < ? THEN ? ELSE inst_seq END "
                        "WHERE device_id = ?", (_json(profile), seq, now, now, int(seq), int(seq), device_id))

    def record_needs(self, device_id, report, now):
        """Store a QoS report; returns the previous one (None if none)."""
        with self.tx() as cur:
            self._ensure(cur, device_id)
            old = cur.execute("SELECT needs FROM devices WHERE device_id = ?", (device_id,)).one()["needs"]
            cur.execute("UPDATE devices SET needs = ?, needs_at = ?, last_seen = ? WHERE device_id = ?",
                        (_json(report), now, now, device_id))
        return old

    def record_health(self, device_id, health, now):
        with self.tx() as cur:
            self._ensure(cur, device_id)
            cur.execute("UPDATE devices SET health = ?, health_at = ?, last_seen = ? WHERE device_id = ?",
                        (_json(health), now, now, device_id))

    def write_desired(self, device_id, profile, expected_version, now, expires_at=None, explanations=None):
        """Replace the desired profile if it is still at ``expected_version``;
        returns the new version, or raises StaleWrite."""
        with self.tx() as cur:
            self._ensure(cur, device_id)
            n = cur.execute(
                "UPDATE devices SET desired = ?, desired_version = desired_version + 1, desired_at = ?, "
                "desired_expires_at = ?, explanations = ? WHERE device_id = ? AND desired_version = ?",
                (_json(profile), now, expires_at, _json(explanations), device_id, expected_version)).rowcount
            row = cur.execute("SELECT desired_version FROM devices WHERE device_id = ?", (device_id,)).one()
        if n != 1:
            raise StaleWrite(device_id, expected_version, row["desired_version"])
        return row["desired_version"]

    def next_seq(self, device_id):
        with self.tx() as cur:
            self._ensure(cur, device_id)
            return cur.execute("UPDATE devices SET inst_seq = inst_seq + 1 WHERE device_id = ? RETURNING inst_seq",
                               (device_id,)).one()["inst_seq"]

    def mark_repaired(self, device_id, version):
        with self.tx() as cur:
            cur.execute("UPDATE devices SET repaired_version = ? WHERE device_id = ?", (version, device_id))

    # ---- reconciliation work -------------------------------------------------
    def request_work(self, device_id, kinds, after):
        """Add work bits to a device; it becomes due at ``after`` (the earliest
        of what was asked)."""
        with self.tx() as cur:
            self._ensure(cur, device_id)
            cur.execute("UPDATE devices SET pending_after = CASE WHEN pending = 0 OR pending_after IS NULL "
                        "OR pending_after > ? THEN ? ELSE pending_after END, pending = pending | ? "
                        "WHERE device_id = ?", (after, after, kinds, device_id))

    def request_work_all(self, kinds, after_fn, online_only=True):
        ids = [d["device_id"] for d in self.list_devices() if d["online"] or not online_only]
        for device_id in ids:
            self.request_work(device_id, kinds, after_fn())
        return ids

    def due_work(self, now, limit=50):
        with self.tx() as cur:
            return cur.execute("SELECT device_id, pending, pending_after FROM devices WHERE pending <> 0 "
                               "AND online = 1 AND pending_after <= ? ORDER BY pending_after LIMIT ?",
                               (now, limit)).all()

    def claim_work(self, device_id, pending, pending_after):
        """Take the work of a device if nobody changed or took it meanwhile."""
        with self.tx() as cur:
            return cur.execute("UPDATE devices SET pending = 0, pending_after = NULL WHERE device_id = ? "
                               "AND pending = ? AND pending_after = ?",
                               (device_id, pending, pending_after)).rowcount == 1

    def expiring(self, before):
        """Online devices whose temporary profile lapses before ``before`` and
        that have no work pending."""
        with self.tx() as cur:
            return [r["device_id"] for r in cur.execute(
                "SELECT device_id FROM devices WHERE online = 1 AND pending = 0 AND "
                "desired_expires_at IS NOT NULL AND desired_expires_at <= ?", (before,)).all()]

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
    def add_instruction(self, inst, desired_version, tier, now, deadline, state=QUEUED):
        with self.tx() as cur:
            cur.execute("INSERT INTO instructions (id, device_id, seq, desired_version, tier, full_state, ops, "
                        "iat, ttl_s, state, created_at, deadline) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (inst["id"], inst["dev"], inst["seq"], desired_version, tier, 1 if inst["full"] else 0,
                         _json(inst["ops"]), inst["iat"], inst["ttl_s"], state, now, deadline))

    def supersede_open(self, device_id, new_id):
        """Older open instructions of a device stop being retried: ``new_id``
        (a full state) replaces them. They time out unless acked first."""
        with self.tx() as cur:
            cur.execute("UPDATE instructions SET superseded_by = ? WHERE device_id = ? AND id <> ? "
                        "AND state IN (?, ?) AND superseded_by IS NULL",
                        (new_id, device_id, new_id, QUEUED, IN_PROGRESS))

    def mark_sent(self, inst_id, now, next_attempt_at):
        with self.tx() as cur:
            cur.execute("UPDATE instructions SET state = ?, attempts = attempts + 1, "
                        "sent_at = COALESCE(sent_at, ?), next_attempt_at = ? WHERE id = ? AND state IN (?, ?)",
                        (IN_PROGRESS, now, next_attempt_at, inst_id, QUEUED, IN_PROGRESS))

    def claim_retry(self, inst_id, expected_next, new_next):
        with self.tx() as cur:
            return cur.execute("UPDATE instructions SET next_attempt_at = ? WHERE id = ? AND state = ? "
                               "AND next_attempt_at = ?",
                               (new_next, inst_id, IN_PROGRESS, expected_next)).rowcount == 1

    def finish(self, inst_id, state, now, reason="", ack=None, device_id=None):
        """Close an instruction; only an open one changes. Returns the row
        as it was before (None when unknown or already closed)."""
        with self.tx() as cur:
            row = cur.execute("SELECT * FROM instructions WHERE id = ?", (inst_id,)).one()
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

    def due_retries(self, now, limit=100):
        with self.tx() as cur:
            return cur.execute("SELECT * FROM instructions WHERE state = ? AND next_attempt_at <= ? "
                               "ORDER BY next_attempt_at LIMIT ?", (IN_PROGRESS, now, limit)).all()

    def outcome_counts(self):
        with self.tx() as cur:
            return {r["state"]: r["n"] for r in cur.execute(
                "SELECT state, COUNT(*) AS n FROM instructions GROUP BY state").all()}

    # ---- events -------------------------------------------------------------
    def add_event(self, device_id, kind, text, now):
        with self.tx() as cur:
            cur.execute("INSERT INTO events (t, device_id, kind, text) VALUES (?, ?, ?, ?)",
                        (now, device_id, kind, text))

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
