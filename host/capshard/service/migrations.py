"""The fleet store's schema, as an ordered list of migrations.

One schema for SQLite and PostgreSQL: the few words the two spell differently
are placeholders filled per dialect. A migration is never edited once shipped;
a change is a new entry at the end.
"""

DIALECT_WORDS = {
    "sqlite": {"serial_pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL"},
    "postgresql": {"serial_pk": "BIGSERIAL PRIMARY KEY", "real": "DOUBLE PRECISION"},
}

# (version, description, statements)
MIGRATIONS = [
    (1, "devices, agreements, instruction log, events", [
        # Per device: what it announced, what we want (desired, versioned), what
        # it says it runs (reported), and the pending reconciliation work.
        """CREATE TABLE devices (
            device_id TEXT PRIMARY KEY,
            online INTEGER NOT NULL DEFAULT 0,
            board TEXT,
            runtime TEXT,
            birth TEXT,
            born_at {real},
            last_seen {real},
            desired TEXT NOT NULL DEFAULT '{{}}',
            desired_version BIGINT NOT NULL DEFAULT 0,
            desired_at {real},
            desired_expires_at {real},
            reported TEXT NOT NULL DEFAULT '{{}}',
            reported_seq BIGINT NOT NULL DEFAULT 0,
            reported_at {real},
            inst_seq BIGINT NOT NULL DEFAULT 0,
            needs TEXT,
            needs_at {real},
            health TEXT,
            health_at {real},
            pending INTEGER NOT NULL DEFAULT 0,
            pending_after {real}
        )""",
        """CREATE TABLE agreements (
            device_id TEXT PRIMARY KEY,
            tier TEXT NOT NULL,
            assigned_at {real} NOT NULL,
            assigned_by TEXT
        )""",
        """CREATE TABLE instructions (
            id TEXT PRIMARY KEY,
            device_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            desired_version BIGINT NOT NULL,
            tier TEXT,
            full_state INTEGER NOT NULL,
            ops TEXT NOT NULL,
            iat BIGINT NOT NULL,
            ttl_s INTEGER NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at {real} NOT NULL,
            sent_at {real},
            next_attempt_at {real},
            deadline {real} NOT NULL,
            superseded_by TEXT,
            acked_at {real},
            ack TEXT,
            reason TEXT
        )""",
        "CREATE INDEX instructions_by_device ON instructions (device_id, seq)",
        "CREATE INDEX instructions_by_state ON instructions (state, next_attempt_at)",
        """CREATE TABLE events (
            id {serial_pk},
            t {real} NOT NULL,
            device_id TEXT,
            kind TEXT NOT NULL,
            text TEXT NOT NULL
        )""",
    ]),
    (2, "drift repair marker and plan explanations", [
        # the desired version a full re-sync was last forced for: a device that
        # keeps failing the same profile is not re-sent it in a loop
        "ALTER TABLE devices ADD COLUMN repaired_version BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE devices ADD COLUMN explanations TEXT",
        "CREATE INDEX events_by_time ON events (t)",
    ]),
    (3, "reconciliation work in its own narrow table", [
        # Requesting and claiming work happen twice per report; on the devices
        # row (kilobytes of JSON) each rewrote the whole row. A row here exists
        # while a device has work asked for, and is deleted when it is claimed.
        """CREATE TABLE device_work (
            device_id TEXT PRIMARY KEY,
            pending INTEGER NOT NULL DEFAULT 0,
            pending_after {real}
        )""",
        "INSERT INTO device_work (device_id, pending, pending_after) SELECT device_id, pending, pending_after "
        "FROM devices WHERE pending <> 0 OR pending_after IS NOT NULL",
        "ALTER TABLE devices DROP COLUMN pending",
        "ALTER TABLE devices DROP COLUMN pending_after",
    ]),
]

LATEST = MIGRATIONS[-1][0]


def statements(dialect, migration):
    words = DIALECT_WORDS[dialect]
    return [s.format(**words) for s in migration[2]]
