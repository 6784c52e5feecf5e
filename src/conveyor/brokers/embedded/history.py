"""Queue samples for the console's charts, in the store's own file (schema version 5).

A sample goes in only if its queue has none in the same slot of time, in the statement
that inserts it, so servers sampling one file at their own pace keep one series.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from conveyor.brokers.results import Sampling
from conveyor.brokers.types import QueueSample


def record(
    connection: sqlite3.Connection, samples: Sequence[QueueSample], sampling: Sampling
) -> None:
    newest = None
    for sample in samples:
        at_ms = round(sample.at * 1000)
        start, end = sampling.slot(at_ms)
        connection.execute(
            "INSERT OR IGNORE INTO queue_samples"
            " (queue, at_ms, depth, published, acked, dead_lettered)"
            " SELECT ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM queue_samples"
            " WHERE queue = ? AND at_ms >= ? AND at_ms < ?)",
            (
                sample.queue,
                at_ms,
                sample.depth,
                sample.published,
                sample.acked,
                sample.dead_lettered,
                sample.queue,
                start,
                end,
            ),
        )
        connection.execute(
            "DELETE FROM queue_samples WHERE queue = ? AND at_ms <= (SELECT at_ms FROM"
            " queue_samples WHERE queue = ? ORDER BY at_ms DESC LIMIT 1 OFFSET ?)",
            (sample.queue, sample.queue, sampling.limit),
        )
        newest = at_ms if newest is None else max(newest, at_ms)
    if newest is not None:
        connection.execute(
            "DELETE FROM queue_samples WHERE at_ms < ?", (newest - sampling.retention_ms,)
        )


def read(
    connection: sqlite3.Connection, since_ms: int, queues: Sequence[str] | None
) -> dict[str, list[QueueSample]]:
    query = (
        "SELECT queue, at_ms, depth, published, acked, dead_lettered FROM queue_samples"
        " WHERE at_ms >= ?"
    )
    parameters: tuple[object, ...] = (since_ms,)
    if queues is not None:
        query += " AND queue IN (SELECT value FROM json_each(?))"
        parameters += (json.dumps(list(queues)),)
    found: dict[str, list[QueueSample]] = {}
    for queue, at_ms, depth, published, acked, dead in connection.execute(
        query + " ORDER BY queue, at_ms", parameters
    ):
        found.setdefault(queue, []).append(
            QueueSample(queue, at_ms / 1000, depth, published, acked, dead)
        )
    return found
