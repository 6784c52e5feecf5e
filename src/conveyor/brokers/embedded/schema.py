"""The embedded store's schema and its migrations.

``PRAGMA application_id`` marks a file as Conveyor's; ``PRAGMA user_version`` is the schema
version. Each migration step moves the schema up one version inside one transaction, so a
file is always at exactly one version.
"""

from __future__ import annotations

APPLICATION_ID = 0x436F6E76  # "Conv"

# The delivery-order index is the heart of the engine: receive walks it from the head
# (highest priority, earliest available, lowest id) and stops after max_messages rows, so
# the cost of a receive does not grow with the depth of the queue. A lease moves a row
# along it by setting available_at_ms to the lease deadline: an expired lease is simply a
# row that is available again, and no reaper is needed. It also covers leased and size,
# so stats count a queue without touching the table.
_V1 = (
    """CREATE TABLE queues (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        options TEXT NOT NULL,
        expires_ms INTEGER,
        created_at_ms INTEGER NOT NULL,
        last_used_ms INTEGER NOT NULL,
        message_count INTEGER NOT NULL DEFAULT 0,
        message_bytes INTEGER NOT NULL DEFAULT 0,
        published INTEGER NOT NULL DEFAULT 0,
        delivered INTEGER NOT NULL DEFAULT 0,
        acked INTEGER NOT NULL DEFAULT 0,
        dead_lettered INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE exchanges (
        name TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        alternate_exchange TEXT,
        unroutable INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
    "INSERT INTO exchanges (name, type) VALUES ('', 'direct')",
    """CREATE TABLE bindings (
        exchange TEXT NOT NULL,
        queue TEXT NOT NULL,
        routing_key TEXT NOT NULL,
        arguments TEXT NOT NULL,
        PRIMARY KEY (exchange, queue, routing_key, arguments)
    ) WITHOUT ROWID""",
    "CREATE INDEX bindings_by_queue ON bindings (queue)",
    """CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        queue_id INTEGER NOT NULL,
        priority INTEGER NOT NULL,
        available_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER,
        enqueued_at_ms INTEGER NOT NULL,
        leased INTEGER NOT NULL DEFAULT 0,
        lease_token TEXT,
        delivery_count INTEGER NOT NULL DEFAULT 0,
        size INTEGER NOT NULL,
        message_id TEXT NOT NULL,
        exchange TEXT NOT NULL,
        routing_key TEXT NOT NULL,
        timestamp REAL NOT NULL,
        ttl REAL,
        content_type TEXT,
        headers TEXT,
        body BLOB NOT NULL,
        message_priority INTEGER NOT NULL
    )""",
    "CREATE INDEX messages_delivery_order"
    " ON messages (queue_id, priority DESC, available_at_ms, id, leased, size)",
    "CREATE INDEX messages_expiry ON messages (expires_at_ms) WHERE expires_at_ms IS NOT NULL",
    "CREATE TABLE waiters (address TEXT PRIMARY KEY, queue_id INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE INDEX waiters_by_queue ON waiters (queue_id)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    "INSERT INTO meta (key, value) VALUES ('topology_version', 0)",
)

# Jobs point at their message by rowid (not by message id) so that publishing plain
# messages pays for no extra index; settling, moving and dead-lettering keep it current.
_V2 = (
    """CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        queue TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        idempotency_key TEXT,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        scheduled_for_ms INTEGER,
        first_attempt_at_ms INTEGER,
        last_attempt_at_ms INTEGER,
        message_rowid INTEGER,
        result TEXT,
        error TEXT,
        progress TEXT,
        result_ttl_ms INTEGER NOT NULL,
        expires_at_ms INTEGER
    ) WITHOUT ROWID""",
    "CREATE INDEX jobs_by_key ON jobs (idempotency_key, created_at_ms)"
    " WHERE idempotency_key IS NOT NULL",
    "CREATE INDEX jobs_expiry ON jobs (expires_at_ms) WHERE expires_at_ms IS NOT NULL",
    """CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        info TEXT NOT NULL,
        heartbeat_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE rate_limits (
        key TEXT PRIMARY KEY,
        tokens REAL NOT NULL,
        updated_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID""",
)

# Streams. A record's primary key is its place in the log, so reading from an offset is a
# range scan of the table itself. ``partitions`` keeps each log's start and end offsets and
# totals, so describing a topic never counts rows. ``latest_keys`` (compacted topics only)
# holds each key's newest offset: compaction deletes older records without a key index on
# every topic. ``producers`` remembers each idempotent producer's last call and its result.
# Group offsets and members point at topics by id; topic ids are never reused.
_V3 = (
    """CREATE TABLE topics (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        partitions INTEGER NOT NULL,
        config TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    )""",
    """CREATE TABLE partitions (
        topic_id INTEGER NOT NULL,
        partition INTEGER NOT NULL,
        start_offset INTEGER NOT NULL DEFAULT 0,
        end_offset INTEGER NOT NULL DEFAULT 0,
        records INTEGER NOT NULL DEFAULT 0,
        bytes INTEGER NOT NULL DEFAULT 0,
        cleaned_offset INTEGER NOT NULL DEFAULT 0,
        compaction_end INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (topic_id, partition)
    ) WITHOUT ROWID""",
    """CREATE TABLE records (
        topic_id INTEGER NOT NULL,
        partition INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        key BLOB,
        value BLOB,
        headers TEXT,
        size INTEGER NOT NULL,
        PRIMARY KEY (topic_id, partition, offset)
    ) WITHOUT ROWID""",
    "CREATE INDEX records_by_time ON records (topic_id, partition, timestamp_ms)",
    """CREATE TABLE latest_keys (
        topic_id INTEGER NOT NULL,
        partition INTEGER NOT NULL,
        key BLOB NOT NULL,
        offset INTEGER NOT NULL,
        PRIMARY KEY (topic_id, partition, key)
    ) WITHOUT ROWID""",
    """CREATE TABLE producers (
        producer_id TEXT PRIMARY KEY,
        sequence INTEGER NOT NULL,
        result TEXT NOT NULL,
        updated_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE groups (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        generation INTEGER NOT NULL DEFAULT 0,
        assignor TEXT NOT NULL
    )""",
    """CREATE TABLE group_members (
        group_id INTEGER NOT NULL,
        member_id TEXT NOT NULL,
        topics TEXT NOT NULL,
        generation INTEGER NOT NULL,
        session_timeout_ms INTEGER NOT NULL,
        heartbeat_at_ms INTEGER NOT NULL,
        PRIMARY KEY (group_id, member_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE group_partitions (
        group_id INTEGER NOT NULL,
        topic_id INTEGER NOT NULL,
        partition INTEGER NOT NULL,
        assigned_to TEXT,
        owner TEXT,
        PRIMARY KEY (group_id, topic_id, partition)
    ) WITHOUT ROWID""",
    """CREATE TABLE group_offsets (
        group_id INTEGER NOT NULL,
        topic_id INTEGER NOT NULL,
        partition INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        committed_at_ms INTEGER NOT NULL,
        PRIMARY KEY (group_id, topic_id, partition)
    ) WITHOUT ROWID""",
)

_V4 = (
    # What an idempotency key stood for, to refuse the key with another request.
    "ALTER TABLE jobs ADD COLUMN request_digest TEXT",
)

# The console's queue history (ResultStore.record_samples). Keyed by time within a queue,
# so a chart reads one range; the time index lets one statement drop every queue's old rows.
_V5 = (
    """CREATE TABLE queue_samples (
        queue TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        depth INTEGER,
        published INTEGER,
        acked INTEGER,
        dead_lettered INTEGER,
        PRIMARY KEY (queue, at_ms)
    ) WITHOUT ROWID""",
    "CREATE INDEX queue_samples_by_time ON queue_samples (at_ms)",
)

# A job submitted without an idempotency key has no row in ``jobs`` until something
# happens to it that its message cannot show (an attempt settled, a cancel, a move): until
# then its message row is its record, found by the rowid its id ends with. Submitting a job
# then writes one B-tree row, not two.
_V6 = (
    "ALTER TABLE messages ADD COLUMN job_task TEXT",
    "ALTER TABLE messages ADD COLUMN job_result_ttl_ms INTEGER",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4, _V5, _V6)
"""MIGRATIONS[n] takes a database from schema version n to n + 1."""

SCHEMA_VERSION = len(MIGRATIONS)
