"""Queue operations on the store: store, lease, ack, requeue, reject, extend, purge, stats.

Each function runs inside a transaction opened by ``Database`` and touches only the
database, so a transaction can be retried whole.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from conveyor.brokers.embedded.dead_letters import dead_letter, drop_head_over_limits
from conveyor.brokers.embedded.rows import (
    COLUMNS,
    DELIVERY_ORDER,
    NOT_LEASED,
    Changes,
    Prepared,
    expiry_ms,
    hold,
    insert,
    marks,
    message_from_row,
    priority_for,
)
from conveyor.brokers.embedded.topology import StoredQueue, Topology
from conveyor.brokers.types import DeadLetterReason, Delivery, QueueStats


def store(
    connection: sqlite3.Connection,
    topology: Topology,
    batch: Sequence[Prepared],
    *,
    exchange: str,
    mandatory: bool,
    available_at_ms: int,
    now_ms: int,
    changes: Changes,
) -> list[int]:
    """Route and insert messages; returns how many queues each reached."""
    rows: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    sizes: dict[int, int] = defaultdict(int)
    unroutable: dict[str, int] = defaultdict(int)
    routed: list[int] = []
    for prepared in batch:
        message = prepared.message
        targets, dropped_at = topology.route(
            exchange, message.routing_key, message.headers, mandatory=mandatory
        )
        if dropped_at is not None:
            unroutable[dropped_at] += 1
        for queue in targets:
            rows[queue.id].append(
                (
                    queue.id,
                    priority_for(queue, message.priority),
                    available_at_ms,
                    expiry_ms(queue, message.ttl, available_at_ms),
                    now_ms,
                    prepared.size,
                    message.id,
                    exchange,
                    message.routing_key,
                    message.timestamp,
                    message.ttl,
                    message.content_type,
                    prepared.headers,
                    message.body,
                    message.priority,
                    prepared.task,
                    prepared.result_ttl_ms,
                )
            )
            sizes[queue.id] += prepared.size
        routed.append(len(targets))
    for queue_id, queue_rows in rows.items():
        queue = topology.queues_by_id[queue_id]
        insert(connection, queue, queue_rows, sizes[queue_id], changes, counts_as_published=True)
    for queue_id in rows:
        drop_head_over_limits(
            connection, topology, topology.queues_by_id[queue_id], now_ms, changes
        )
    for name, count in unroutable.items():
        connection.execute(
            "UPDATE exchanges SET unroutable = unroutable + ? WHERE name = ?", (count, name)
        )
    return routed


def lease(
    connection: sqlite3.Connection,
    topology: Topology,
    queue: StoredQueue,
    *,
    max_messages: int,
    lease_until_ms: int,
    token: str,
    now_ms: int,
    changes: Changes,
) -> list[Delivery]:
    """Lease up to ``max_messages`` from the head of the queue, dead-lettering poison.

    Expired messages are skipped here and dead-lettered by ``expire``.
    """
    if queue.spec.expires is not None:
        connection.execute("UPDATE queues SET last_used_ms = ? WHERE id = ?", (now_ms, queue.id))
    limit = queue.spec.delivery_limit
    deliveries: list[Delivery] = []
    while len(deliveries) < max_messages:
        rows = connection.execute(
            f"SELECT {COLUMNS} FROM messages WHERE queue_id = ? AND available_at_ms <= ?"
            f" AND (expires_at_ms IS NULL OR expires_at_ms > ?) {DELIVERY_ORDER} LIMIT ?",
            (queue.id, now_ms, now_ms, max_messages - len(deliveries)),
        ).fetchall()
        if not rows:
            break
        poison = [row for row in rows if limit is not None and row[2] >= limit]
        if poison:
            dead_letter(
                connection,
                topology,
                queue,
                poison,
                DeadLetterReason.DELIVERY_LIMIT,
                now_ms,
                changes,
            )
            rows = [row for row in rows if row not in poison]
        if rows:
            ids = [row[0] for row in rows]
            connection.execute(
                "UPDATE messages SET leased = 1, lease_token = ?, available_at_ms = ?,"
                f" delivery_count = delivery_count + 1 WHERE id IN ({marks(len(ids))})",
                (token, lease_until_ms, *ids),
            )
            deadline = lease_until_ms / 1000
            deliveries.extend(
                Delivery(
                    message_from_row(row), queue.spec.name, row[2] + 1, token, deadline, row[0]
                )
                for row in rows
            )
        if not poison:
            break
    changes.count(queue.id, delivered=len(deliveries))
    return deliveries


def ack(
    connection: sqlite3.Connection,
    topology: Topology,
    deliveries: Sequence[Delivery],
    now_ms: int,
    changes: Changes,
) -> list[int]:
    """Delete the messages whose leases still hold; return the tags of those that lapsed.

    The common case, every lease alive on queues without length limits, is one DELETE per
    lease token with no rows handed back: asking SQLite to return each deleted row would
    cost more than the delete. Only if a lease lapsed, or a queue keeps exact counts, does
    the delete run again row by row to learn which rows went.
    """
    by_token: dict[str, list[Delivery]] = defaultdict(list)
    for delivery in deliveries:
        by_token[delivery.receipt].append(delivery)
    lapsed: list[int] = []
    for token, held in by_token.items():
        stored = [topology.queues.get(delivery.queue) for delivery in held]
        if all(queue is not None and not _counts_held(queue) for queue in stored) and (
            _delete_all_or_none(connection, token, held, now_ms)
        ):
            for queue_id, count in Counter(q.id for q in stored if q is not None).items():
                changes.count(queue_id, acked=count)
        else:
            lapsed.extend(_ack_row_by_row(connection, topology, token, held, now_ms, changes))
    return lapsed


def _delete_all_or_none(
    connection: sqlite3.Connection, token: str, held: Sequence[Delivery], now_ms: int
) -> bool:
    """Delete every held message in one statement, or none of them if any lease lapsed."""
    connection.execute("SAVEPOINT ack")
    deleted = connection.execute(
        "DELETE FROM messages WHERE lease_token = ? AND available_at_ms > ?"
        " AND id IN (SELECT value FROM json_each(?))",
        (token, now_ms, json.dumps([delivery.tag for delivery in held])),
    ).rowcount
    if deleted != len(held):
        connection.execute("ROLLBACK TO ack")
    connection.execute("RELEASE ack")
    return deleted == len(held)


def _counts_held(queue: StoredQueue) -> bool:
    return bool(queue.spec.max_length or queue.spec.max_bytes)


def _ack_row_by_row(
    connection: sqlite3.Connection,
    topology: Topology,
    token: str,
    held: Sequence[Delivery],
    now_ms: int,
    changes: Changes,
) -> list[int]:
    removed: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    acked: set[int] = set()
    for tag, queue_id, size in connection.execute(
        "DELETE FROM messages WHERE lease_token = ? AND available_at_ms > ?"
        " AND id IN (SELECT value FROM json_each(?)) RETURNING id, queue_id, size",
        (token, now_ms, json.dumps([delivery.tag for delivery in held])),
    ):
        acked.add(tag)
        totals = removed[queue_id]
        totals[0] += 1
        totals[1] += size
    for queue_id, (count, size) in removed.items():
        hold(connection, topology.queues_by_id[queue_id], -count, -size)
        changes.count(queue_id, acked=count)
    return [delivery.tag for delivery in held if delivery.tag not in acked]


def requeue(
    connection: sqlite3.Connection, delivery: Delivery, available_at_ms: int | None, now_ms: int
) -> bool:
    """Return a leased message to the queue; ``None`` puts it back at its original place."""
    cursor = connection.execute(
        "UPDATE messages SET leased = 0, lease_token = NULL,"
        " available_at_ms = coalesce(?, enqueued_at_ms)"
        " WHERE id = ? AND lease_token = ? AND available_at_ms > ?",
        (available_at_ms, delivery.tag, delivery.receipt, now_ms),
    )
    return cursor.rowcount == 1


def release(connection: sqlite3.Connection, deliveries: Sequence[Delivery], now_ms: int) -> int:
    """Put unworked deliveries back where they were, taking back the delivery they counted."""
    return sum(
        connection.execute(
            "UPDATE messages SET leased = 0, lease_token = NULL, available_at_ms = enqueued_at_ms,"
            " delivery_count = max(delivery_count - 1, 0)"
            " WHERE id = ? AND lease_token = ? AND available_at_ms > ?",
            (delivery.tag, delivery.receipt, now_ms),
        ).rowcount
        for delivery in deliveries
    )


def reject(
    connection: sqlite3.Connection,
    topology: Topology,
    queue: StoredQueue,
    delivery: Delivery,
    now_ms: int,
    changes: Changes,
) -> bool:
    rows = connection.execute(
        f"SELECT {COLUMNS} FROM messages WHERE id = ? AND lease_token = ? AND available_at_ms > ?",
        (delivery.tag, delivery.receipt, now_ms),
    ).fetchall()
    if not rows:
        return False
    dead_letter(connection, topology, queue, rows, DeadLetterReason.REJECTED, now_ms, changes)
    return True


def extend(connection: sqlite3.Connection, delivery: Delivery, until_ms: int, now_ms: int) -> bool:
    cursor = connection.execute(
        "UPDATE messages SET available_at_ms = ?"
        " WHERE id = ? AND lease_token = ? AND available_at_ms > ?",
        (until_ms, delivery.tag, delivery.receipt, now_ms),
    )
    return cursor.rowcount == 1


def purge(connection: sqlite3.Connection, queue: StoredQueue, now_ms: int) -> int:
    where = f"queue_id = ? AND {NOT_LEASED}"
    count, size = connection.execute(
        f"SELECT count(*), coalesce(sum(size), 0) FROM messages WHERE {where}", (queue.id, now_ms)
    ).fetchone()
    connection.execute(f"DELETE FROM messages WHERE {where}", (queue.id, now_ms))
    hold(connection, queue, -count, -size)
    return int(count)


def _priorities(queue: StoredQueue) -> Iterable[int]:
    return range(queue.spec.max_priority or 0, -1, -1)


def stats(
    connection: sqlite3.Connection,
    queue: StoredQueue,
    now_ms: int,
) -> QueueStats:
    """Counts by state, read from the delivery-order index (which covers ``size``)."""
    total = held = later = leased = 0
    oldest_enqueued_ms: int | None = None
    for priority in _priorities(queue):
        count, size, pending, live_leases = connection.execute(
            "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(available_at_ms > ?), 0),"
            " coalesce(sum(available_at_ms > ? AND leased), 0)"
            " FROM messages WHERE queue_id = ? AND priority = ?",
            (now_ms, now_ms, queue.id, priority),
        ).fetchone()
        total += count
        held += size
        later += pending
        leased += live_leases
        head = connection.execute(
            "SELECT enqueued_at_ms FROM messages WHERE queue_id = ? AND priority = ?"
            " AND available_at_ms <= ? ORDER BY available_at_ms, id LIMIT 1",
            (queue.id, priority, now_ms),
        ).fetchone()
        if head is not None and (oldest_enqueued_ms is None or head[0] < oldest_enqueued_ms):
            oldest_enqueued_ms = head[0]
    published, delivered, acked, dead = connection.execute(
        "SELECT published, delivered, acked, dead_lettered FROM queues WHERE id = ?",
        (queue.id,),
    ).fetchone()
    return QueueStats(
        queue=queue.spec.name,
        ready=total - later,
        delayed=later - leased,
        unacked=leased,
        oldest_age=None if oldest_enqueued_ms is None else (now_ms - oldest_enqueued_ms) / 1000,
        published=published,
        delivered=delivered,
        acked=acked,
        dead_lettered=dead,
        bytes=held,
    )


def next_available_ms(connection: sqlite3.Connection, queue: StoredQueue) -> int | None:
    """When the earliest delayed or leased message of the queue becomes available."""
    earliest: int | None = None
    for priority in _priorities(queue):
        row = connection.execute(
            "SELECT available_at_ms FROM messages WHERE queue_id = ? AND priority = ?"
            " ORDER BY available_at_ms LIMIT 1",
            (queue.id, priority),
        ).fetchone()
        if row is not None and (earliest is None or row[0] < earliest):
            earliest = row[0]
    return earliest
