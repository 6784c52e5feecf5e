"""Dead-lettering: moving messages out of a queue to its dead-letter exchange, and expiry.

Each message keeps its id and body and gains an ``x-death`` entry saying where it died and
why, as RabbitMQ records it.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Mapping, Sequence
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
    priority_for,
)
from conveyor.brokers.embedded.topology import StoredQueue, Topology
from conveyor.brokers.types import DeadLetterReason, JobStatus, Overflow
from conveyor.deaths import is_cycle, with_death
from conveyor.errors import QueueFull
from conveyor.message import decode_headers, encode_headers


def expire(
    connection: sqlite3.Connection,
    topology: Topology,
    now_ms: int,
    changes: Changes,
    *,
    limit: int = 1000,
) -> int:
    """Dead-letter (or drop) messages of any queue past their TTL that no live lease holds.

    Returns how many expired. Receive skips expired messages; this moves them on.
    """
    rows = connection.execute(
        f"SELECT queue_id, {COLUMNS} FROM messages WHERE expires_at_ms <= ? AND {NOT_LEASED}"
        " LIMIT ?",
        (now_ms, now_ms, limit),
    ).fetchall()
    by_queue: dict[int, list[Sequence[Any]]] = defaultdict(list)
    for row in rows:
        by_queue[row[0]].append(row[1:])
    for queue_id, queue_rows in by_queue.items():
        source = topology.queues_by_id[queue_id]
        dead_letter(
            connection, topology, source, queue_rows, DeadLetterReason.EXPIRED, now_ms, changes
        )
    return len(rows)


def next_expiry_ms(connection: sqlite3.Connection) -> int | None:
    (earliest,) = connection.execute(
        "SELECT min(expires_at_ms) FROM messages WHERE expires_at_ms IS NOT NULL"
    ).fetchone()
    return None if earliest is None else int(earliest)


def dead_letter(
    connection: sqlite3.Connection,
    topology: Topology,
    queue: StoredQueue,
    rows: Sequence[Sequence[Any]],
    reason: DeadLetterReason,
    now_ms: int,
    changes: Changes,
    extra_headers: Mapping[str, Any] | None = None,
) -> None:
    """Move rows out of ``queue`` to its dead-letter exchange, or drop them if it has none
    or it names an exchange that does not exist (as RabbitMQ does: one queue's dead-letter
    setting must never stop another queue).

    Each message keeps its id and body and gains an ``x-death`` entry saying where it died
    and why. Messages that would route back into the queue they left are dropped, so a
    misconfigured dead-letter cycle cannot loop forever.
    """
    if not rows:
        return
    ids = [row[0] for row in rows]
    keep_job_records(connection, ids, JobStatus.DEAD, now_ms)
    connection.execute(f"DELETE FROM messages WHERE id IN ({marks(len(ids))})", ids)
    spec = queue.spec
    hold(connection, queue, -len(rows), -sum(row[3] for row in rows))
    if spec.dead_letter_exchange is not None:
        changes.count(queue.id, dead_lettered=len(rows))
    if spec.dead_letter_exchange not in topology.exchanges:
        return  # none, or not declared: dropped, as RabbitMQ drops them
    for row in rows:
        routing_key = (
            row[6] if spec.dead_letter_routing_key is None else spec.dead_letter_routing_key
        )
        headers = with_death(
            decode_headers(row[10]),
            queue=spec.name,
            reason=reason,
            now=now_ms / 1000,
            exchange=row[5],
            routing_key=row[6],
            ttl=row[8],
        )
        if extra_headers:
            headers.update(extra_headers)
        encoded = encode_headers(headers)
        size = len(row[11])
        targets, _ = topology.route(
            spec.dead_letter_exchange, routing_key, headers, mandatory=False
        )
        for target in targets:
            if is_cycle(target.spec.name, headers):
                continue
            new_row = (
                target.id,
                priority_for(target, row[12]),
                now_ms,
                expiry_ms(target, None, now_ms),
                now_ms,
                size,
                row[4],
                spec.dead_letter_exchange,
                routing_key,
                row[7],
                None,
                row[9],
                encoded,
                row[11],
                row[12],
                None,
                None,
            )
            try:
                insert(connection, target, [new_row], size, changes, counts_as_published=False)
            except QueueFull:
                continue  # as RabbitMQ does: a full reject-publish target drops dead letters
            drop_head_over_limits(connection, topology, target, now_ms, changes)


def drop_head_over_limits(
    connection: sqlite3.Connection,
    topology: Topology,
    queue: StoredQueue,
    now_ms: int,
    changes: Changes,
) -> None:
    """With overflow drop-head, dead-letter the oldest waiting messages past the limits."""
    spec = queue.spec
    if spec.overflow is not Overflow.DROP_HEAD or not (spec.max_length or spec.max_bytes):
        return
    count, held = connection.execute(
        "SELECT message_count, message_bytes FROM queues WHERE id = ?", (queue.id,)
    ).fetchone()
    excess_count = count - spec.max_length if spec.max_length else 0
    excess_bytes = held - spec.max_bytes if spec.max_bytes else 0
    if excess_count <= 0 and excess_bytes <= 0:
        return
    victims = []
    for row in connection.execute(
        f"SELECT {COLUMNS} FROM messages WHERE queue_id = ? AND {NOT_LEASED} {DELIVERY_ORDER}",
        (queue.id, now_ms),
    ):
        if excess_count <= 0 and excess_bytes <= 0:
            break
        victims.append(row)
        excess_count -= 1
        excess_bytes -= row[3]
    dead_letter(connection, topology, queue, victims, DeadLetterReason.MAXLEN, now_ms, changes)
