"""The messages table's row layout, and the low-level steps every message operation shares.

Functions run inside a transaction opened by ``Database`` and touch only the database, so a
transaction can be retried whole. ``Changes`` collects what the broker must act on after the
commit: queues with new ready work (to wake their receivers) and lifetime counters.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from conveyor.brokers.embedded.topology import StoredQueue
from conveyor.brokers.types import JobStatus, Overflow, as_float
from conveyor.errors import MessageTooLarge, QueueFull
from conveyor.message import Message, decode_headers, encode_headers, stored_message

INSERT_MESSAGE = (
    "INSERT INTO messages (queue_id, priority, available_at_ms, expires_at_ms, enqueued_at_ms,"
    " size, message_id, exchange, routing_key, timestamp, ttl, content_type, headers, body,"
    " message_priority, job_task, job_result_ttl_ms)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
COLUMNS = (
    "id, priority, delivery_count, size, message_id, exchange, routing_key, timestamp, ttl,"
    " content_type, headers, body, message_priority"
)
# ``priority`` orders delivery (0 on queues without max_priority, capped at it otherwise);
# ``message_priority`` is what the publisher set, handed back unchanged.
DELIVERY_ORDER = "ORDER BY priority DESC, available_at_ms, id"
# A row not held by a live lease: ready, delayed, or leased by someone whose lease lapsed.
NOT_LEASED = "(leased = 0 OR available_at_ms <= ?)"


@dataclass(slots=True)
class Prepared:
    """A message checked and encoded once, before any transaction starts.

    ``task`` and ``result_ttl_ms`` are set on a job's message: its row is the job's record
    until the job gets a row of its own (see ``keep_job_records``).
    """

    message: Message
    headers: str | None
    size: int
    task: str | None = None
    result_ttl_ms: int | None = None


@dataclass(slots=True)
class Changes:
    """What a transaction did that the broker acts on once it has committed.

    ``woken_queue_ids``: queues given ready work, whose waiting receivers to wake.
    ``counters``: per queue id, [published, delivered, acked, dead_lettered] to add.
    """

    woken_queue_ids: set[int] = field(default_factory=set)
    counters: dict[int, list[int]] = field(default_factory=dict)

    def count(
        self,
        queue_id: int,
        *,
        published: int = 0,
        delivered: int = 0,
        acked: int = 0,
        dead_lettered: int = 0,
    ) -> None:
        totals = self.counters.setdefault(queue_id, [0, 0, 0, 0])
        totals[0] += published
        totals[1] += delivered
        totals[2] += acked
        totals[3] += dead_lettered


def add_counters(connection: sqlite3.Connection, counters: dict[int, list[int]]) -> None:
    """Lifetime counters, in the transaction that moved the messages: exact whatever
    becomes of the process afterwards."""
    for queue_id, totals in counters.items():
        connection.execute(_ADD_COUNTERS, (*totals, queue_id))


_ADD_COUNTERS = (
    "UPDATE queues SET published = published + ?, delivered = delivered + ?,"
    " acked = acked + ?, dead_lettered = dead_lettered + ? WHERE id = ?"
)


_KEEP_JOB_RECORDS = (
    "INSERT INTO jobs (id, task, queue, status, created_at_ms, updated_at_ms, message_rowid,"
    " result_ttl_ms, expires_at_ms)"
    " SELECT m.message_id, m.job_task, q.name, ?, m.enqueued_at_ms, ?, m.id,"
    " m.job_result_ttl_ms, CASE WHEN ? THEN ? + m.job_result_ttl_ms END"
    " FROM messages AS m JOIN queues AS q ON q.id = m.queue_id"
    " WHERE m.id IN (SELECT value FROM json_each(?)) AND m.job_task IS NOT NULL"
    " ON CONFLICT (id) DO NOTHING"
)


def keep_job_records(
    connection: sqlite3.Connection, rowids: Sequence[int], status: JobStatus, now_ms: int
) -> None:
    """Give the jobs these message rows carry a row of their own, with ``status``, before
    the messages are deleted or moved (a job that has one already keeps it)."""
    connection.execute(
        _KEEP_JOB_RECORDS,
        (status.value, now_ms, status.finished, now_ms, json.dumps(list(rowids))),
    )


def hold(connection: sqlite3.Connection, queue: StoredQueue, count: int, size: int) -> None:
    """Keep the held count and bytes of a queue with limits exact, in the same transaction.

    Only queues that declare max_length or max_bytes pay for this; the others are counted
    from the delivery-order index when asked.
    """
    if queue.spec.max_length or queue.spec.max_bytes:
        connection.execute(
            "UPDATE queues SET message_count = message_count + ?,"
            " message_bytes = message_bytes + ? WHERE id = ?",
            (count, size, queue.id),
        )


def prepare(
    message: Message,
    max_size: int,
    *,
    task: str | None = None,
    result_ttl: float | None = None,
) -> Prepared:
    """The row's parts; its size is the body's, which ``max_bytes`` counts as RabbitMQ's
    ``x-max-length-bytes`` does, while ``max_size`` bounds body and headers together."""
    headers = encode_headers(message.headers)
    size = len(message.body)
    if (whole := size + (len(headers) if headers else 0)) > max_size:
        raise MessageTooLarge(whole, max_size)
    ttl_ms = None if result_ttl is None else int(result_ttl * 1000)
    return Prepared(message, headers, size, task, ttl_ms)


def expiry_ms(queue: StoredQueue, ttl: float | None, available_at_ms: int) -> int | None:
    queue_ttl = as_float(queue.spec.message_ttl)
    if ttl is None or (queue_ttl is not None and queue_ttl < ttl):
        ttl = queue_ttl
    return None if ttl is None else available_at_ms + int(ttl * 1000)


def priority_for(queue: StoredQueue, priority: int) -> int:
    return min(priority, queue.spec.max_priority) if queue.spec.max_priority else 0


def insert(
    connection: sqlite3.Connection,
    queue: StoredQueue,
    rows: list[tuple[Any, ...]],
    size: int,
    changes: Changes,
    *,
    counts_as_published: bool,
) -> None:
    """Insert rows into ``queue``; their rowids are consecutive, ending at last_insert_rowid()."""
    spec = queue.spec
    if spec.overflow is Overflow.REJECT_PUBLISH and (spec.max_length or spec.max_bytes):
        count, held = connection.execute(
            "SELECT message_count, message_bytes FROM queues WHERE id = ?", (queue.id,)
        ).fetchone()
        if spec.max_length and count + len(rows) > spec.max_length:
            raise QueueFull(spec.name, f"max_length {spec.max_length}")
        if spec.max_bytes and held + size > spec.max_bytes:
            raise QueueFull(spec.name, f"max_bytes {spec.max_bytes}")
    if len(rows) == 1:
        connection.execute(INSERT_MESSAGE, rows[0])
    else:
        connection.executemany(INSERT_MESSAGE, rows)
    hold(connection, queue, len(rows), size)
    changes.woken_queue_ids.add(queue.id)
    if counts_as_published:
        changes.count(queue.id, published=len(rows))


def message_from_row(row: Sequence[Any]) -> Message:
    return stored_message(
        row[11], row[6], decode_headers(row[10]), row[12], row[8], row[4], row[7], row[9]
    )


def marks(count: int) -> str:
    return ",".join("?" * count)


def now_ms() -> int:
    return int(time.time() * 1000)
