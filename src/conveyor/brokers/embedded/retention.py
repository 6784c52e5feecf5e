"""Retention and compaction of partition logs, in bounded steps.

Each call does at most ``budget`` deletions in the caller's transaction, so the broker can
run passes as a series of short transactions between which producers keep appending.

- Time retention deletes from the head of the log while records are older than the
  cutoff: the log start offset moves forward, as when Kafka drops old segments.
- Size retention deletes from the head until the partition fits ``retention_bytes``.
- Compaction deletes a keyed record when a newer record with the same key exists (found in
  ``latest_keys``), and a tombstone once it is the latest for its key and older than
  ``delete_retention``. Records newer than ``min_compaction_lag`` are left alone. Offsets
  never change; a compacted log simply has gaps.
"""

from __future__ import annotations

import sqlite3

from conveyor.brokers.embedded.streams import StoredTopic
from conveyor.brokers.stream_types import RetentionReport
from conveyor.brokers.types import as_float


def enforce(
    connection: sqlite3.Connection,
    stored: StoredTopic,
    now_ms: int,
    budget: int,
    swept: set[int],
) -> tuple[RetentionReport, bool]:
    """One bounded step over every partition; also whether work is left for another step.

    ``swept`` carries the partitions whose compaction sweep ended during this pass from
    step to step: they are not swept again in the same pass, so a pass ends even when
    partitions take different numbers of steps per sweep.
    """
    config = stored.spec.config
    deleted = compacted = tombstones = 0
    more = False
    for partition in range(stored.spec.partitions):
        if config.deletes:
            removed, left = _delete_head(connection, stored, partition, now_ms, budget)
            deleted += removed
            more = more or left
        if config.compacted and partition not in swept:
            removed, gone, left = _compact(connection, stored, partition, now_ms, budget)
            compacted += removed
            tombstones += gone
            if left:
                more = True
            else:
                swept.add(partition)
    return RetentionReport(deleted, compacted, tombstones), more


def _delete_head(
    connection: sqlite3.Connection, stored: StoredTopic, partition: int, now_ms: int, budget: int
) -> tuple[int, bool]:
    config = stored.spec.config
    start, total_bytes = connection.execute(
        "SELECT start_offset, bytes FROM partitions WHERE topic_id = ? AND partition = ?",
        (stored.id, partition),
    ).fetchone()
    retention = as_float(config.retention)
    cutoff_ms = None if retention is None else now_ms - int(retention * 1000)
    excess = total_bytes - config.retention_bytes if config.retention_bytes is not None else 0
    new_start = start
    removed_bytes = 0
    for offset, timestamp_ms, size in connection.execute(
        "SELECT offset, timestamp_ms, size FROM records"
        " WHERE topic_id = ? AND partition = ? AND offset >= ? ORDER BY offset LIMIT ?",
        (stored.id, partition, start, budget + 1),
    ):
        too_old = cutoff_ms is not None and timestamp_ms < cutoff_ms
        if not too_old and removed_bytes >= excess:
            new_start = offset
            break
        removed_bytes += size
        new_start = offset + 1
    if new_start == start:
        return 0, False
    removed = connection.execute(
        "DELETE FROM records WHERE topic_id = ? AND partition = ? AND offset < ?",
        (stored.id, partition, new_start),
    ).rowcount
    connection.execute(
        "UPDATE partitions SET start_offset = ?, records = records - ?, bytes = bytes - ?"
        " WHERE topic_id = ? AND partition = ?",
        (new_start, removed, removed_bytes, stored.id, partition),
    )
    if stored.spec.config.compacted:
        connection.execute(
            "DELETE FROM latest_keys WHERE topic_id = ? AND partition = ? AND offset < ?",
            (stored.id, partition, new_start),
        )
    return removed, removed >= budget


def _compact(
    connection: sqlite3.Connection, stored: StoredTopic, partition: int, now_ms: int, budget: int
) -> tuple[int, int, bool]:
    """Advance this partition's compaction sweep by up to ``budget`` offsets.

    A sweep covers the log from its start to where records were younger than
    ``min_compaction_lag`` when the sweep began. Tombstones are dropped only when a sweep
    ends: every older record with the same key was visited by that sweep while the
    tombstone already existed, and so is gone, and removing the tombstone cannot bring an
    old value back.
    """
    config = stored.spec.config
    key = (stored.id, partition)
    start, cursor, sweep_end = connection.execute(
        "SELECT start_offset, cleaned_offset, compaction_end FROM partitions"
        " WHERE topic_id = ? AND partition = ?",
        key,
    ).fetchone()
    if cursor >= sweep_end:
        lag_ms = int((as_float(config.min_compaction_lag) or 0.0) * 1000)
        young = None
        if lag_ms:
            (young,) = connection.execute(
                "SELECT min(offset) FROM records WHERE topic_id = ? AND partition = ?"
                " AND timestamp_ms > ?",
                (*key, now_ms - lag_ms),
            ).fetchone()
        (end,) = connection.execute(
            "SELECT end_offset FROM partitions WHERE topic_id = ? AND partition = ?", key
        ).fetchone()
        cursor, sweep_end = start, end if young is None else young
        if sweep_end <= cursor:
            return 0, 0, False
    window_end = min(sweep_end, max(cursor, start) + budget)
    sizes = connection.execute(
        "DELETE FROM records WHERE topic_id = ? AND partition = ? AND offset >= ?"
        " AND offset < ? AND offset < (SELECT latest.offset FROM latest_keys AS latest"
        " WHERE latest.topic_id = records.topic_id AND latest.partition = records.partition"
        " AND latest.key = records.key) RETURNING size",
        (*key, cursor, window_end),
    ).fetchall()
    tombstones: list[tuple[int]] = []
    if window_end >= sweep_end:
        cutoff_ms = now_ms - int((as_float(config.delete_retention) or 0.0) * 1000)
        tombstones = connection.execute(
            "DELETE FROM records WHERE topic_id = ? AND partition = ? AND offset < ?"
            " AND value IS NULL AND timestamp_ms <= ? RETURNING size",
            (*key, sweep_end, cutoff_ms),
        ).fetchall()
        connection.execute(
            "DELETE FROM latest_keys WHERE topic_id = ? AND partition = ? AND offset < ?"
            " AND NOT EXISTS (SELECT 1 FROM records WHERE records.topic_id = ?"
            " AND records.partition = ? AND records.offset = latest_keys.offset)",
            (*key, sweep_end, *key),
        )
    removed_bytes = sum(size for (size,) in sizes) + sum(size for (size,) in tombstones)
    connection.execute(
        "UPDATE partitions SET cleaned_offset = ?, compaction_end = ?, records = records - ?,"
        " bytes = bytes - ? WHERE topic_id = ? AND partition = ?",
        (window_end, sweep_end, len(sizes) + len(tombstones), removed_bytes, *key),
    )
    return len(sizes), len(tombstones), window_end < sweep_end
