"""Message operations on the store: store, lease, ack, nack, expire, dead-letter, purge, stats.

Each function runs inside a transaction opened by ``Database`` and touches only the
database, so a transaction can be retried whole. ``Changes`` collects the queues that got
new ready work, so the caller can wake their waiters once the transaction has committed.
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conveyor.brokers.embedded.topology import StoredQueue, Topology
from conveyor.brokers.types import (
    DeadLetterReason,
    Delivery,
    Overflow,
    QueuedMessage,
    QueueStats,
    as_float,
)
from conveyor.errors import QueueFull
from conveyor.message import Message, decode_headers, encode_headers

INSERT_MESSAGE = (
    "INSERT INTO messages (queue_id, priority, available_at_ms, expires_at_ms, enqueued_at_ms,"
    " size, message_id, exchange, routing_key, timestamp, ttl, content_type, headers, body,"
    " message_priority) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COLUMNS = (
    "id, priority, delivery_count, size, message_id, exchange, routing_key, timestamp, ttl,"
    " content_type, headers, body, message_priority"
)
# ``priority`` orders delivery (0 on queues without max_priority, capped at it otherwise);
# ``message_priority`` is what the publisher set, handed back unchanged.
_DELIVERY_ORDER = "ORDER BY priority DESC, available_at_ms, id"
# A row not held by a live lease: ready, delayed, or leased by someone whose lease lapsed.
_NOT_LEASED = "(leased = 0 OR available_at_ms <= ?)"


@dataclass(slots=True)
class Prepared:
    """A message checked and encoded once, before any transaction starts."""

    message: Message
    headers: str | None
    size: int


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


def flush_counters(connection: sqlite3.Connection, counters: dict[int, list[int]]) -> None:
    connection.executemany(
        "UPDATE queues SET published = published + ?, delivered = delivered + ?,"
        " acked = acked + ?, dead_lettered = dead_lettered + ? WHERE id = ?",
        [(*totals, queue_id) for queue_id, totals in counters.items()],
    )


def _hold(connection: sqlite3.Connection, queue: StoredQueue, count: int, size: int) -> None:
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


def prepare(message: Message, max_size: int) -> Prepared:
    from conveyor.errors import MessageTooLarge

    headers = encode_headers(message.headers)
    size = len(message.body) + (len(headers) if headers else 0)
    if size > max_size:
        raise MessageTooLarge(size, max_size)
    return Prepared(message, headers, size)


def _expiry_ms(queue: StoredQueue, ttl: float | None, available_at_ms: int) -> int | None:
    queue_ttl = as_float(queue.spec.message_ttl)
    if ttl is None or (queue_ttl is not None and queue_ttl < ttl):
        ttl = queue_ttl
    return None if ttl is None else available_at_ms + int(ttl * 1000)


def _priority(queue: StoredQueue, priority: int) -> int:
    return min(priority, queue.spec.max_priority) if queue.spec.max_priority else 0


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
                    _priority(queue, message.priority),
                    available_at_ms,
                    _expiry_ms(queue, message.ttl, available_at_ms),
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
                )
            )
            sizes[queue.id] += prepared.size
        routed.append(len(targets))
    for queue_id, queue_rows in rows.items():
        queue = topology.queues_by_id[queue_id]
        insert(connection, queue, queue_rows, sizes[queue_id], changes, counts_as_published=True)
    for queue_id in rows:
        _drop_head_over_limits(
            connection, topology, topology.queues_by_id[queue_id], now_ms, changes
        )
    for name, count in unroutable.items():
        connection.execute(
            "UPDATE exchanges SET unroutable = unroutable + ? WHERE name = ?", (count, name)
        )
    return routed


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
    _hold(connection, queue, len(rows), size)
    changes.woken_queue_ids.add(queue.id)
    if counts_as_published:
        changes.count(queue.id, published=len(rows))


def _drop_head_over_limits(
    connection: sqlite3.Connection,
    topology: Topology,
    queue: StoredQueue,
    now_ms: int,
    changes: Changes,
) -> None:
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
        f"SELECT {_COLUMNS} FROM messages WHERE queue_id = ? AND {_NOT_LEASED} {_DELIVERY_ORDER}",
        (queue.id, now_ms),
    ):
        if excess_count <= 0 and excess_bytes <= 0:
            break
        victims.append(row)
        excess_count -= 1
        excess_bytes -= row[3]
    dead_letter(connection, topology, queue, victims, DeadLetterReason.MAXLEN, now_ms, changes)


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
            f"SELECT {_COLUMNS} FROM messages WHERE queue_id = ? AND available_at_ms <= ?"
            f" AND (expires_at_ms IS NULL OR expires_at_ms > ?) {_DELIVERY_ORDER} LIMIT ?",
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
                f" delivery_count = delivery_count + 1 WHERE id IN ({_marks(len(ids))})",
                (token, lease_until_ms, *ids),
            )
            deadline = lease_until_ms / 1000
            deliveries.extend(
                Delivery(_message(row), queue.spec.name, row[2] + 1, token, deadline, row[0])
                for row in rows
            )
        if not poison:
            break
    changes.count(queue.id, delivered=len(deliveries))
    return deliveries


def _message(row: Sequence[Any]) -> Message:
    return Message(
        body=row[11],
        routing_key=row[6],
        headers=decode_headers(row[10]),
        priority=row[12],
        ttl=row[8],
        id=row[4],
        timestamp=row[7],
        content_type=row[9],
    )


def _marks(count: int) -> str:
    return ",".join("?" * count)


def ack(
    connection: sqlite3.Connection,
    topology: Topology,
    deliveries: Sequence[Delivery],
    now_ms: int,
    changes: Changes,
) -> list[int]:
    """Delete the messages whose leases still hold; return the tags of those that lapsed."""
    by_token: dict[str, list[int]] = defaultdict(list)
    for delivery in deliveries:
        by_token[delivery.lease_token].append(delivery.tag)
    removed: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    acked: set[int] = set()
    for token, tags in by_token.items():
        for tag, queue_id, size in connection.execute(
            f"DELETE FROM messages WHERE lease_token = ? AND available_at_ms > ?"
            f" AND id IN ({_marks(len(tags))}) RETURNING id, queue_id, size",
            (token, now_ms, *tags),
        ):
            acked.add(tag)
            totals = removed[queue_id]
            totals[0] += 1
            totals[1] += size
    for queue_id, (count, size) in removed.items():
        _hold(connection, topology.queues_by_id[queue_id], -count, -size)
        changes.count(queue_id, acked=count)
    return [delivery.tag for delivery in deliveries if delivery.tag not in acked]


def requeue(
    connection: sqlite3.Connection, delivery: Delivery, available_at_ms: int | None, now_ms: int
) -> bool:
    """Return a leased message to the queue; ``None`` puts it back at its original place."""
    cursor = connection.execute(
        "UPDATE messages SET leased = 0, lease_token = NULL,"
        " available_at_ms = coalesce(?, enqueued_at_ms)"
        " WHERE id = ? AND lease_token = ? AND available_at_ms > ?",
        (available_at_ms, delivery.tag, delivery.lease_token, now_ms),
    )
    return cursor.rowcount == 1


def reject(
    connection: sqlite3.Connection,
    topology: Topology,
    queue: StoredQueue,
    delivery: Delivery,
    now_ms: int,
    changes: Changes,
) -> bool:
    rows = connection.execute(
        f"SELECT {_COLUMNS} FROM messages WHERE id = ? AND lease_token = ? AND available_at_ms > ?",
        (delivery.tag, delivery.lease_token, now_ms),
    ).fetchall()
    if not rows:
        return False
    dead_letter(connection, topology, queue, rows, DeadLetterReason.REJECTED, now_ms, changes)
    return True


def extend(connection: sqlite3.Connection, delivery: Delivery, until_ms: int, now_ms: int) -> bool:
    cursor = connection.execute(
        "UPDATE messages SET available_at_ms = ?"
        " WHERE id = ? AND lease_token = ? AND available_at_ms > ?",
        (until_ms, delivery.tag, delivery.lease_token, now_ms),
    )
    return cursor.rowcount == 1


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
        f"SELECT queue_id, {_COLUMNS} FROM messages WHERE expires_at_ms <= ? AND {_NOT_LEASED}"
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
    """Move rows out of ``queue`` to its dead-letter exchange (or drop them if it has none).

    Each message keeps its id and body and gains an ``x-death`` entry saying where it died
    and why. Messages that would route back into the queue they left are dropped, so a
    misconfigured dead-letter cycle cannot loop forever.
    """
    if not rows:
        return
    ids = [row[0] for row in rows]
    connection.execute(f"DELETE FROM messages WHERE id IN ({_marks(len(ids))})", ids)
    spec = queue.spec
    _hold(connection, queue, -len(rows), -sum(row[3] for row in rows))
    if spec.dead_letter_exchange is not None:
        changes.count(queue.id, dead_lettered=len(rows))
    if spec.dead_letter_exchange is None:
        return
    for row in rows:
        routing_key = (
            row[6] if spec.dead_letter_routing_key is None else spec.dead_letter_routing_key
        )
        headers = _with_death(row, spec.name, reason, now_ms)
        if extra_headers:
            headers.update(extra_headers)
        encoded = encode_headers(headers)
        size = len(row[11]) + (len(encoded) if encoded else 0)
        targets, _ = topology.route(
            spec.dead_letter_exchange, routing_key, headers, mandatory=False
        )
        for target in targets:
            if _is_cycle(target, headers):
                continue
            new_row = (
                target.id,
                _priority(target, row[12]),
                now_ms,
                _expiry_ms(target, None, now_ms),
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
            )
            try:
                insert(connection, target, [new_row], size, changes, counts_as_published=False)
            except QueueFull:
                continue  # as RabbitMQ does: a full reject-publish target drops dead letters
            _drop_head_over_limits(connection, topology, target, now_ms, changes)


def _is_cycle(target: StoredQueue, headers: dict[str, Any]) -> bool:
    """A message back in a queue it died in, with no rejection on the way, is looping.

    Rejections break the cycle: "reject to a delay queue whose TTL routes back" is the
    usual retry-with-delay pattern and must keep working.
    """
    deaths = headers["x-death"]
    return any(death.get("queue") == target.spec.name for death in deaths) and not any(
        death.get("reason") == DeadLetterReason.REJECTED.value for death in deaths
    )


def _with_death(
    row: Sequence[Any], queue: str, reason: DeadLetterReason, now_ms: int
) -> dict[str, Any]:
    headers = decode_headers(row[10])
    deaths: list[dict[str, Any]] = list(headers.get("x-death", []))
    entry = {
        "queue": queue,
        "reason": reason.value,
        "count": 1,
        "time": now_ms / 1000,
        "exchange": row[5],
        "routing-keys": [row[6]],
    }
    for index, death in enumerate(deaths):
        if death.get("queue") == queue and death.get("reason") == reason.value:
            entry["count"] = int(death.get("count", 1)) + 1
            del deaths[index]
            break
    headers["x-death"] = [entry, *deaths]
    headers.setdefault("x-first-death-queue", queue)
    headers.setdefault("x-first-death-reason", reason.value)
    headers.setdefault("x-first-death-exchange", row[5])
    return headers


def purge(connection: sqlite3.Connection, queue: StoredQueue, now_ms: int) -> int:
    where = f"queue_id = ? AND {_NOT_LEASED}"
    count, size = connection.execute(
        f"SELECT count(*), coalesce(sum(size), 0) FROM messages WHERE {where}", (queue.id, now_ms)
    ).fetchone()
    connection.execute(f"DELETE FROM messages WHERE {where}", (queue.id, now_ms))
    _hold(connection, queue, -count, -size)
    return int(count)


def _priorities(queue: StoredQueue) -> Iterable[int]:
    return range(queue.spec.max_priority or 0, -1, -1)


def stats(
    connection: sqlite3.Connection,
    queue: StoredQueue,
    now_ms: int,
    unflushed: Sequence[int] = (0, 0, 0, 0),
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
        published=published + unflushed[0],
        delivered=delivered + unflushed[1],
        acked=acked + unflushed[2],
        dead_lettered=dead + unflushed[3],
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


def now_ms() -> int:
    return int(time.time() * 1000)


def leased_rows(
    connection: sqlite3.Connection, deliveries: Sequence[Delivery], now_ms: int
) -> list[Any]:
    """The stored rows of deliveries whose leases still hold."""
    return [
        row
        for delivery in deliveries
        for row in connection.execute(
            f"SELECT {_COLUMNS} FROM messages"
            " WHERE id = ? AND lease_token = ? AND available_at_ms > ?",
            (delivery.tag, delivery.lease_token, now_ms),
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
    where = f"queue_id = ? AND {_NOT_LEASED}"
    parameters: list[Any] = [queue.id, now_ms]
    if message_ids is not None:
        where += f" AND message_id IN ({_marks(len(message_ids))})"
        parameters.extend(message_ids)
    return connection.execute(
        f"SELECT {_COLUMNS}, enqueued_at_ms, available_at_ms, leased FROM messages"
        f" WHERE {where} {_DELIVERY_ORDER} LIMIT ? OFFSET ?",
        (*parameters, limit, offset),
    ).fetchall()


def browse(
    connection: sqlite3.Connection, queue: StoredQueue, limit: int, offset: int
) -> list[QueuedMessage]:
    rows = connection.execute(
        f"SELECT {_COLUMNS}, enqueued_at_ms, available_at_ms, leased FROM messages"
        f" WHERE queue_id = ? {_DELIVERY_ORDER} LIMIT ? OFFSET ?",
        (queue.id, limit, offset),
    ).fetchall()
    return [
        QueuedMessage(
            _message(row), queue.spec.name, row[2], row[13] / 1000, row[14] / 1000, bool(row[15])
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
    connection.execute(f"DELETE FROM messages WHERE id IN ({_marks(len(ids))})", ids)
    _hold(connection, source, -len(rows), -sum(row[3] for row in rows))
    moved: dict[str, int] = {}
    for row in rows:
        new_row = (
            target.id,
            _priority(target, row[12]),
            now_ms,
            _expiry_ms(target, row[8], now_ms),
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
        )
        insert(connection, target, [new_row], row[3], changes, counts_as_published=True)
        moved[row[4]] = int(connection.execute("SELECT last_insert_rowid()").fetchone()[0])
    return moved


def remove_waiting(
    connection: sqlite3.Connection, topology: Topology, rowid: int, now_ms: int
) -> bool:
    """Delete one message unless a live lease holds it (cancelling a job that has not started)."""
    row = connection.execute(
        f"DELETE FROM messages WHERE id = ? AND {_NOT_LEASED} RETURNING queue_id, size",
        (rowid, now_ms),
    ).fetchone()
    if row is None:
        return False
    _hold(connection, topology.queues_by_id[row[0]], -1, -row[1])
    return True
