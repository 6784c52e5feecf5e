"""Topics and their partition logs: create, alter, append, read, find offsets.

Functions run inside a transaction opened by ``Database`` and touch only the database, so a
transaction can be retried whole. Appending reads each partition's end offset from the
``partitions`` row and advances it in the same transaction: offsets are dense, and the
write lock makes them unique across processes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.brokers.stream_types import (
    PartitionInfo,
    ProducerBatch,
    ProducerRecord,
    Record,
    RecordMetadata,
    TopicConfig,
    TopicInfo,
    TopicPartition,
    TopicSpec,
    check_offset_at,
)
from conveyor.errors import (
    ConfigError,
    DecodeError,
    OffsetOutOfRange,
    SequenceError,
    TopicNotFound,
)
from conveyor.partitioner import StickyPartitioner

EMPTY_HEADERS: Mapping[str, str] = {}


@dataclass(frozen=True, slots=True)
class StoredTopic:
    id: int
    spec: TopicSpec

    def check_partition(self, partition: int) -> None:
        self.spec.check_partition(partition)


def _spec(name: str, partitions: int, config: str) -> TopicSpec:
    return TopicSpec(name, partitions, TopicConfig.from_json(json.loads(config)))


def topic(connection: sqlite3.Connection, name: str) -> StoredTopic:
    row = connection.execute(
        "SELECT id, partitions, config FROM topics WHERE name = ?", (name,)
    ).fetchone()
    if row is None:
        raise TopicNotFound(name)
    return StoredTopic(row[0], _spec(name, row[1], row[2]))


def topics_by_id(connection: sqlite3.Connection) -> dict[int, StoredTopic]:
    return {
        row[0]: StoredTopic(row[0], _spec(row[1], row[2], row[3]))
        for row in connection.execute("SELECT id, name, partitions, config FROM topics")
    }


def create(connection: sqlite3.Connection, spec: TopicSpec, now_ms: int) -> None:
    try:
        existing = topic(connection, spec.name)
    except TopicNotFound:
        cursor = connection.execute(
            "INSERT INTO topics (name, partitions, config, created_at_ms) VALUES (?, ?, ?, ?)",
            (spec.name, spec.partitions, json.dumps(spec.config.to_json()), now_ms),
        )
        _add_partitions(connection, cursor.lastrowid or 0, 0, spec.partitions)
        return
    if existing.spec != spec:
        raise ConfigError(
            f"topic {spec.name!r} exists with {existing.spec.partitions} partitions and "
            f"config {existing.spec.config.to_json()}; use alter_topic to change it, or "
            "delete_topic first"
        )


def _add_partitions(connection: sqlite3.Connection, topic_id: int, first: int, end: int) -> None:
    connection.executemany(
        "INSERT INTO partitions (topic_id, partition) VALUES (?, ?)",
        [(topic_id, partition) for partition in range(first, end)],
    )


def alter(
    connection: sqlite3.Connection, name: str, partitions: int | None, config: TopicConfig | None
) -> TopicSpec:
    stored = topic(connection, name)
    count = stored.spec.partitions if partitions is None else partitions
    if count < stored.spec.partitions:
        raise ConfigError(
            f"topic {name!r} has {stored.spec.partitions} partitions; a topic can only grow "
            "(fewer partitions would move keys and lose records)"
        )
    spec = TopicSpec(name, count, config or stored.spec.config)
    connection.execute(
        "UPDATE topics SET partitions = ?, config = ? WHERE id = ?",
        (spec.partitions, json.dumps(spec.config.to_json()), stored.id),
    )
    _add_partitions(connection, stored.id, stored.spec.partitions, spec.partitions)
    if spec.config.compacted and not stored.spec.config.compacted:
        connection.execute(  # records written before compaction was on
            "INSERT OR REPLACE INTO latest_keys (topic_id, partition, key, offset)"
            " SELECT topic_id, partition, key, max(offset) FROM records"
            " WHERE topic_id = ? AND key IS NOT NULL GROUP BY partition, key",
            (stored.id,),
        )
    elif stored.spec.config.compacted and not spec.config.compacted:
        connection.execute("DELETE FROM latest_keys WHERE topic_id = ?", (stored.id,))
    return spec


def delete(connection: sqlite3.Connection, name: str) -> None:
    stored = topic(connection, name)
    for table in ("records", "partitions", "latest_keys", "group_offsets", "group_partitions"):
        connection.execute(f"DELETE FROM {table} WHERE topic_id = ?", (stored.id,))
    connection.execute("DELETE FROM topics WHERE id = ?", (stored.id,))


def list_specs(connection: sqlite3.Connection) -> list[TopicSpec]:
    return sorted((t.spec for t in topics_by_id(connection).values()), key=lambda s: s.name)


def describe(connection: sqlite3.Connection, name: str) -> TopicInfo:
    stored = topic(connection, name)
    rows = connection.execute(
        "SELECT partition, start_offset, end_offset, records, bytes FROM partitions"
        " WHERE topic_id = ? ORDER BY partition",
        (stored.id,),
    )
    return TopicInfo(stored.spec, tuple(PartitionInfo(*row) for row in rows))


def log_range(connection: sqlite3.Connection, topic_id: int, partition: int) -> tuple[int, int]:
    """(log start offset, log end offset) of one partition."""
    start, end = connection.execute(
        "SELECT start_offset, end_offset FROM partitions WHERE topic_id = ? AND partition = ?",
        (topic_id, partition),
    ).fetchone()
    return start, end


# appending


def append(
    connection: sqlite3.Connection,
    name: str,
    records: Sequence[ProducerRecord],
    sticky: StickyPartitioner,
    batch: ProducerBatch | None,
    now_ms: int,
) -> tuple[StoredTopic, list[RecordMetadata]]:
    """Append ``records`` to their partitions; an idempotent batch seen before appends none."""
    stored = topic(connection, name)
    if batch is not None and (earlier := _seen_batch(connection, batch)) is not None:
        return stored, earlier
    sizes = stored.spec.check_records(records)
    by_partition: dict[int, list[int]] = {}
    for index, partition in enumerate(sticky.place(name, records, stored.spec.partitions)):
        by_partition.setdefault(partition, []).append(index)
    placed: list[RecordMetadata | None] = [None] * len(records)
    rows: list[tuple[Any, ...]] = []
    for partition, indexes in by_partition.items():
        (end,) = connection.execute(
            "SELECT end_offset FROM partitions WHERE topic_id = ? AND partition = ?",
            (stored.id, partition),
        ).fetchone()
        total = 0
        for offset, index in enumerate(indexes, end):
            record = records[index]
            timestamp_ms = now_ms if record.timestamp is None else int(record.timestamp * 1000)
            size = sizes[index]
            total += size
            headers = json.dumps(dict(record.headers)) if record.headers else None
            rows.append(
                (
                    stored.id,
                    partition,
                    offset,
                    timestamp_ms,
                    record.key,
                    record.value,
                    headers,
                    size,
                )
            )
            placed[index] = RecordMetadata(name, partition, offset, timestamp_ms / 1000)
        connection.execute(
            "UPDATE partitions SET end_offset = end_offset + ?, records = records + ?,"
            " bytes = bytes + ? WHERE topic_id = ? AND partition = ?",
            (len(indexes), len(indexes), total, stored.id, partition),
        )
    connection.executemany(
        "INSERT INTO records (topic_id, partition, offset, timestamp_ms, key, value, headers,"
        " size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    if stored.spec.config.compacted:
        connection.executemany(
            "INSERT OR REPLACE INTO latest_keys (topic_id, partition, key, offset)"
            " VALUES (?, ?, ?, ?)",
            [(row[0], row[1], row[4], row[2]) for row in rows],
        )
    metadata = [m for m in placed if m is not None]
    if batch is not None:
        _remember_batch(connection, batch, metadata, now_ms)
    return stored, metadata


def _seen_batch(
    connection: sqlite3.Connection, batch: ProducerBatch
) -> list[RecordMetadata] | None:
    row = connection.execute(
        "SELECT sequence, result FROM producers WHERE producer_id = ?", (batch.producer_id,)
    ).fetchone()
    if row is None:
        return None  # a new producer, or one whose state expired: any sequence starts it
    sequence, result = row
    if batch.sequence == sequence:
        return [RecordMetadata(*item) for item in json.loads(result)]
    if batch.sequence != sequence + 1:
        raise SequenceError(batch.producer_id, sequence + 1, batch.sequence)
    return None


def _remember_batch(
    connection: sqlite3.Connection,
    batch: ProducerBatch,
    metadata: list[RecordMetadata],
    now_ms: int,
) -> None:
    connection.execute(
        "INSERT OR REPLACE INTO producers (producer_id, sequence, result, updated_at_ms)"
        " VALUES (?, ?, ?, ?)",
        (batch.producer_id, batch.sequence, json.dumps(metadata), now_ms),
    )


def expire_producers(connection: sqlite3.Connection, before_ms: int) -> int:
    """Forget idempotent producers idle since ``before_ms`` (Kafka: producer id expiry)."""
    return connection.execute(
        "DELETE FROM producers WHERE updated_at_ms < ?", (before_ms,)
    ).rowcount


# reading


def read(
    connection: sqlite3.Connection,
    positions: Mapping[TopicPartition, int],
    max_records: int,
) -> tuple[list[Record], set[int]]:
    """Records from each position on, at most ``max_records`` in all; and the topic ids read."""
    found: list[Record] = []
    topic_ids: set[int] = set()
    stored: dict[str, StoredTopic] = {}
    for (name, partition), offset in positions.items():
        room = max_records - len(found)
        if room <= 0:
            break
        if name not in stored:
            stored[name] = topic(connection, name)
        current = stored[name]
        current.check_partition(partition)
        topic_ids.add(current.id)
        start, end = log_range(connection, current.id, partition)
        if not start <= offset <= end:
            raise OffsetOutOfRange(name, partition, offset, start, end)
        if offset == end:
            continue
        rows = connection.execute(
            "SELECT offset, timestamp_ms, key, value, headers FROM records"
            " WHERE topic_id = ? AND partition = ? AND offset >= ? ORDER BY offset LIMIT ?",
            (current.id, partition, offset, room),
        ).fetchall()
        found.extend(
            Record(
                name,
                partition,
                row[0],
                row[1] / 1000,
                row[2],
                row[3],
                EMPTY_HEADERS if row[4] is None else _headers(row[4]),
            )
            for row in rows
        )
    return found, topic_ids


def _headers(text: str) -> dict[str, str]:
    try:
        headers = json.loads(text)
    except ValueError as exc:
        raise DecodeError(f"record headers are not JSON ({exc})") from exc
    return headers  # type: ignore[no-any-return]


def offsets_at(
    connection: sqlite3.Connection, partitions: Sequence[TopicPartition], at: str | float
) -> dict[TopicPartition, int]:
    check_offset_at(at)
    result: dict[TopicPartition, int] = {}
    for name, partition in partitions:
        stored = topic(connection, name)
        stored.check_partition(partition)
        start, end = log_range(connection, stored.id, partition)
        if at == "earliest":
            offset = start
        elif at == "latest":
            offset = end
        else:
            row = connection.execute(
                "SELECT min(offset) FROM records WHERE topic_id = ? AND partition = ?"
                " AND timestamp_ms >= ?",
                (stored.id, partition, int(float(at) * 1000)),
            ).fetchone()
            offset = end if row[0] is None else row[0]
        result[TopicPartition(name, partition)] = offset
    return result
