"""Looking at and moving waiting messages: browsing, moving between queues, removing one."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from conveyor.brokers.embedded.rows import (
    COLUMNS,
    DELIVERY_ORDER,
    NOT_LEASED,
    Changes,
    expiry_ms,
    hold,
    insert,
    keep_job_records,
    marks,
    message_from_row,
    priority_for,
)
from conveyor.brokers.embedded.topology import StoredQueue, Topology
from conveyor.brokers.types import Delivery, JobStatus, QueuedMessage


def leased_rows(
    connection: sqlite3.Connection, deliveries: Sequence[Delivery], now_ms: int
) -> list[Any]:
    """The stored rows of deliveries whose leases still hold."""
    return [
        row
        for delivery in deliveries
        for row in connection.execute(
            f"SELECT {COLUMNS} FROM messages"
            " WHERE id = ? AND lease_token = ? AND available_at_ms > ?",
            (delivery.tag, delivery.receipt, now_ms),
        )
    ]


def waiting_rows(
    connection: sqlite3.Connection,
    queue: StoredQueue,
    now_ms: int,
    *,
    limit: int = -1,
    offset: int = 0,
    message_ids: Sequence[str] | None = None,
) -> list[Any]:
    """Rows not held by a live lease, in delivery order, with enqueued/available times."""
    where = f"queue_id = ? AND {NOT_LEASED}"
    parameters: list[Any] = [queue.id, now_ms]
    if message_ids is not None:
        where += f" AND message_id IN ({marks(len(message_ids))})"
        parameters.extend(message_ids)
    return connection.execute(
        f"SELECT {COLUMNS}, enqueued_at_ms, available_at_ms, leased FROM messages"
        f" WHERE {where} {DELIVERY_ORDER} LIMIT ? OFFSET ?",
        (*parameters, limit, offset),
    ).fetchall()


def browse(
    connection: sqlite3.Connection, queue: StoredQueue, limit: int, offset: int
) -> list[QueuedMessage]:
    rows = connection.execute(
        f"SELECT {COLUMNS}, enqueued_at_ms, available_at_ms, leased FROM messages"
        f" WHERE queue_id = ? {DELIVERY_ORDER} LIMIT ? OFFSET ?",
        (queue.id, limit, offset),
    ).fetchall()
    return [
        QueuedMessage(
            message_from_row(row),
            queue.spec.name,
            row[2],
            row[13] / 1000,
            row[14] / 1000,
            bool(row[15]),
        )
        for row in rows
    ]


def move(
    connection: sqlite3.Connection,
    source: StoredQueue,
    target: StoredQueue,
    rows: Sequence[Sequence[Any]],
    now_ms: int,
    changes: Changes,
) -> dict[str, int]:
    """Move rows (from ``waiting_rows``) to ``target`` as fresh deliveries.

    Returns message id -> new rowid.
    """
    ids = [row[0] for row in rows]
    keep_job_records(connection, ids, JobStatus.QUEUED, now_ms)
    connection.execute(f"DELETE FROM messages WHERE id IN ({marks(len(ids))})", ids)
    hold(connection, source, -len(rows), -sum(row[3] for row in rows))
    moved: dict[str, int] = {}
    for row in rows:
        new_row = (
            target.id,
            priority_for(target, row[12]),
            now_ms,
            expiry_ms(target, row[8], now_ms),
            now_ms,
            row[3],
            row[4],
            row[5],
            row[6],
            row[7],
            row[8],
            row[9],
            row[10],
            row[11],
            row[12],
            None,
            None,
        )
        insert(connection, target, [new_row], row[3], changes, counts_as_published=True)
        moved[row[4]] = int(connection.execute("SELECT last_insert_rowid()").fetchone()[0])
    return moved


def remove_waiting(
    connection: sqlite3.Connection, topology: Topology, rowid: int, now_ms: int
) -> bool:
    """Delete one message unless a live lease holds it (cancelling a job that has not started)."""
    row = connection.execute(
        f"DELETE FROM messages WHERE id = ? AND {NOT_LEASED} RETURNING queue_id, size",
        (rowid, now_ms),
    ).fetchone()
    if row is None:
        return False
    hold(connection, topology.queues_by_id[row[0]], -1, -row[1])
    return True
