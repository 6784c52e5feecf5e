"""Sending records: values and keys encoded once, idempotent retries where the broker can.

An idempotent producer numbers its calls; a call that failed with an unknown outcome (the
broker was unreachable or locked) is sent again with the same number, and the broker
answers with the first append's offsets instead of appending twice. Calls are made one at
a time, so a gap in the numbers can only mean a lost call. On a broker without
idempotent produce (kafka:// for now) a retried call may append its records twice.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from conveyor.brokers.base import Broker
from conveyor.brokers.capabilities import Capability
from conveyor.brokers.stream_types import (
    OffsetCommit,
    ProducerBatch,
    ProducerRecord,
    RecordMetadata,
    TopicSpec,
)
from conveyor.errors import BrokerUnavailable, ConfigError, TopicNotFound

Value = bytes | str | None | Any


def encode_value(value: Value) -> bytes | None:
    """Bytes pass through, str is UTF-8, ``None`` is a tombstone, anything else is JSON."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    try:
        return json.dumps(value, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"cannot encode a {type(value).__name__} value as JSON ({exc}); send bytes, str "
            "or JSON-compatible data"
        ) from exc


def encode_key(key: bytes | str | None) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    raise ConfigError(f"a key must be bytes or str, not {type(key).__name__}")


def record(
    value: Value,
    *,
    key: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    timestamp: float | None = None,
    partition: int | None = None,
) -> ProducerRecord:
    """A ProducerRecord from Python values (see encode_value and encode_key)."""
    return ProducerRecord(encode_value(value), encode_key(key), headers, timestamp, partition)


class Producer:
    """Appends records to topics through one broker.

    Args:
        idempotent: number the calls so that retries cannot duplicate records; by
            default, when the broker declares idempotent produce (NotSupported if asked
            for on one that does not).
        retries: attempts after the first when the broker is unavailable or locked.
        retry_backoff: seconds before the first retry, doubling each time.
        auto_create_topics: a topic that does not exist is created (one partition, the
            default settings) and the call made again, as Kafka's
            ``auto.create.topics.enable`` does; otherwise TopicNotFound.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        idempotent: bool | None = None,
        retries: int = 5,
        retry_backoff: float = 0.1,
        producer_id: str | None = None,
        auto_create_topics: bool = False,
    ) -> None:
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, not {retries}")
        self.broker = broker
        if idempotent is None:
            idempotent = Capability.IDEMPOTENT_PRODUCE in broker.capabilities
        self.idempotent = idempotent
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.producer_id = producer_id or _new_producer_id()
        self.auto_create_topics = auto_create_topics
        self._sequence = 0
        self._one_at_a_time = asyncio.Lock()

    def _new_identity(self) -> None:
        """Start over as a new producer, so the next call can never be taken for this one."""
        self.producer_id = _new_producer_id()
        self._sequence = 0

    async def send(
        self,
        topic: str,
        value: Value,
        *,
        key: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        timestamp: float | None = None,
        partition: int | None = None,
    ) -> RecordMetadata:
        (metadata,) = await self.send_batch(
            topic,
            [record(value, key=key, headers=headers, timestamp=timestamp, partition=partition)],
        )
        return metadata

    async def send_batch(
        self,
        topic: str,
        records: Sequence[ProducerRecord],
        *,
        commit: OffsetCommit | None = None,
    ) -> list[RecordMetadata]:
        """Append ``records`` atomically; with ``commit``, store a group's offsets with them."""
        async with self._one_at_a_time:
            batch = ProducerBatch(self.producer_id, self._sequence) if self.idempotent else None
            pause = self.retry_backoff
            for attempt in range(self.retries + 1):
                try:
                    metadata = await self._produce(topic, records, batch, commit)
                    break
                except BrokerUnavailable as error:
                    if attempt == self.retries or not error.transient:
                        self._new_identity()  # this call's outcome stays unknown
                        raise
                    await asyncio.sleep(pause)
                    pause *= 2
            self._sequence += 1
            return metadata

    async def _produce(
        self,
        topic: str,
        records: Sequence[ProducerRecord],
        batch: ProducerBatch | None,
        commit: OffsetCommit | None,
    ) -> list[RecordMetadata]:
        try:
            return await self.broker.produce(topic, records, batch=batch, commit=commit)
        except TopicNotFound:
            if not self.auto_create_topics:
                raise
        await ensure_topics(self.broker, [topic])
        return await self.broker.produce(topic, records, batch=batch, commit=commit)


async def ensure_topics(broker: Broker, topics: Sequence[str]) -> None:
    """Create each topic that does not exist, with one partition and default settings."""
    for topic in topics:
        try:
            await broker.describe_topic(topic)
        except TopicNotFound:
            await broker.create_topic(TopicSpec(topic))


def _new_producer_id() -> str:
    return f"producer-{secrets.token_hex(8)}"
