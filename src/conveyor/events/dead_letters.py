"""Stream dead letters read back: the records subscribers gave up on, as subscriber.py
writes them to ``<topic>.dlq`` (the record as it was, plus ``x-`` headers saying where
it came from and why it failed).

For people looking into a dead-letter topic (the console, tooling): a header missing or
malformed (written by hand, or by another program) reads as unknown, never as an error,
so that one odd record cannot hide the others.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

from conveyor.assignors import TopicPartition
from conveyor.brokers.base import Broker
from conveyor.brokers.stream_types import Record
from conveyor.errors import OffsetOutOfRange
from conveyor.names import DEAD_LETTER_SUFFIX

ADDED_HEADERS = frozenset(
    {
        "x-original-topic",
        "x-original-partition",
        "x-original-offset",
        "x-original-timestamp",
        "x-original-key",
        "x-group",
        "x-subscriber",
        "x-attempts",
        "x-error-type",
        "x-error-message",
        "x-error-traceback",
        "x-failed-at",
    }
)
"""The headers a subscriber adds when it dead-letters a record."""


def is_dead_letter_topic(name: str) -> bool:
    return name.endswith(DEAD_LETTER_SUFFIX)


@dataclass(frozen=True, slots=True)
class StreamDeadLetter:
    """One dead-lettered record, with what the subscriber said of it."""

    record: Record
    original_topic: str | None
    original_partition: int | None
    original_offset: int | None
    group: str | None
    subscriber: str | None
    attempts: int | None
    error_type: str | None
    error_message: str | None
    traceback: str | None
    failed_at: float | None

    @classmethod
    def of(cls, record: Record) -> StreamDeadLetter:
        headers = record.headers
        return cls(
            record=record,
            original_topic=headers.get("x-original-topic"),
            original_partition=_whole(headers.get("x-original-partition")),
            original_offset=_whole(headers.get("x-original-offset")),
            group=headers.get("x-group"),
            subscriber=headers.get("x-subscriber"),
            attempts=_whole(headers.get("x-attempts")),
            error_type=headers.get("x-error-type"),
            error_message=headers.get("x-error-message"),
            traceback=headers.get("x-error-traceback"),
            failed_at=_moment(headers.get("x-failed-at")),
        )

    @property
    def original_headers(self) -> Mapping[str, str]:
        """The record's own headers, as its producer sent them."""
        return {k: v for k, v in self.record.headers.items() if k not in ADDED_HEADERS}

    @property
    def when(self) -> float:
        """When it was dead-lettered (the record's own time where the header is missing)."""
        return self.record.timestamp if self.failed_at is None else self.failed_at


@dataclass(frozen=True, slots=True)
class DeadLetterTopic:
    name: str
    records: int
    newest: list[StreamDeadLetter]
    """The newest dead letters, newest first."""


async def read_dead_letter_topic(broker: Broker, name: str, *, limit: int) -> DeadLetterTopic:
    """How many records the topic holds and the newest ``limit`` of them: the last
    ``limit`` of each partition, merged. TopicNotFound if the topic is gone."""
    info = await broker.describe_topic(name)
    found: list[StreamDeadLetter] = []
    for partition in info.partitions:
        start = max(partition.start, partition.end - limit)
        if start >= partition.end:
            continue
        with contextlib.suppress(OffsetOutOfRange):  # retention moved the start meanwhile
            records = await broker.fetch(
                {TopicPartition(name, partition.partition): start},
                max_records=partition.end - start,
            )
            found.extend(StreamDeadLetter.of(record) for record in records)
    found.sort(key=lambda dead: (dead.when, dead.record.partition, dead.record.offset))
    return DeadLetterTopic(name, info.records, found[::-1][:limit])


def _whole(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _moment(text: str | None) -> float | None:
    try:
        value = None if text is None else float(text)
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None
