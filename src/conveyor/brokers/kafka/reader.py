"""Reading partitions by offset (``Broker.fetch``) with a consumer that joins no group.

librdkafka's consumer reports the end of each partition (``enable.partition.eof``), so a
fetch returns as soon as every partition it reads is drained, without trusting the high
watermark. An offset outside the log comes back from the broker as an offset reset
error (``auto.offset.reset=error``) and becomes OffsetOutOfRange.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message
from confluent_kafka import TopicPartition as KafkaPartition

from conveyor.brokers.kafka.admin import INTERNAL_GROUP
from conveyor.brokers.stream_types import Record, TopicPartition
from conveyor.errors import BrokerError

OUT_OF_RANGE = (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE)
SLICE_S = 0.05
NO_HEADERS: Mapping[str, str] = MappingProxyType({})  # shared: a Record's headers are read-only
END_REPORT_S = 5.0  # longest a fetch waits for the broker to report the partitions' ends


def to_record(message: Message) -> Record:
    """The Record of a consumed message that carries no error."""
    (record,) = to_records([message])
    return record


def to_records(messages: list[Message]) -> list[Record]:
    """The Records of the messages that carry no error.

    The consumer's hot loop: one comprehension, with no call per record but the message's
    own accessors (a function call per record was a fifth of a poll). ``tuple.__new__``
    builds each NamedTuple without its Python-level ``__new__``.
    """
    new, empty = tuple.__new__, NO_HEADERS
    return [
        new(Record, (m.topic(), m.partition(), m.offset(), m.timestamp()[1] / 1000, m.key(),
                     m.value(), _headers(raw) if (raw := m.headers()) else empty))
        for m in messages
        if m.error() is None
    ]  # fmt: skip


def _headers(raw: Any) -> dict[str, str]:
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {k: _text(v) for k, v in pairs}


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value or ""


class OutOfRange(Exception):
    """A partition's offset is outside its log (the caller looks up the log's bounds)."""

    def __init__(self, partition: TopicPartition) -> None:
        self.partition = partition


class PartitionReader:
    """One unsubscribed consumer, used by one fetch at a time."""

    def __init__(self, config: dict[str, Any], timeout: float) -> None:
        self._consumer = Consumer(
            {
                **config,
                "group.id": f"{INTERNAL_GROUP}fetch",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "error",
                "fetch.wait.max.ms": 100,
            }
        )
        self._timeout = timeout
        self._lock = asyncio.Lock()

    async def fetch(
        self, positions: Mapping[TopicPartition, int], max_records: int, wait: float
    ) -> list[Record]:
        async with self._lock:
            return await asyncio.to_thread(self._fetch, dict(positions), max_records, wait)

    def _fetch(
        self, positions: dict[TopicPartition, int], max_records: int, wait: float
    ) -> list[Record]:
        self._consumer.assign([KafkaPartition(t, p, o) for (t, p), o in positions.items()])
        started = time.monotonic()
        hard_deadline = started + max(wait, min(self._timeout, END_REPORT_S))
        drained: set[TopicPartition] = set()
        records: list[Record] = []
        try:
            while len(records) < max_records and time.monotonic() < hard_deadline:
                waited_enough = records or time.monotonic() - started >= wait
                if waited_enough and len(drained) == len(positions):
                    break
                for message in self._consumer.consume(max_records - len(records), SLICE_S):
                    self._take(message, records, drained)
        finally:
            self._consumer.unassign()
        return records[:max_records]

    @staticmethod
    def _take(message: Message, records: list[Record], drained: set[TopicPartition]) -> None:
        partition = TopicPartition(message.topic() or "", message.partition() or 0)
        error = message.error()
        if error is None:
            records.append(to_record(message))
            drained.discard(partition)
        elif error.code() == KafkaError._PARTITION_EOF:
            drained.add(partition)
        elif error.code() in OUT_OF_RANGE:
            raise OutOfRange(partition)
        else:
            raise BrokerError(f"kafka: reading {partition.topic}[{partition.partition}]: {error}")

    async def close(self) -> None:
        await asyncio.to_thread(self._consumer.close)
