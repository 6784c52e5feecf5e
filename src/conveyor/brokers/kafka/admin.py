"""Topics on a Kafka cluster through confluent-kafka's AdminClient.

The AdminClient answers with concurrent futures resolved on librdkafka's threads; they are
awaited through ``asyncio.wrap_future`` so the event loop never blocks on the network.
Blocking calls without futures (metadata, watermarks) run in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaPartition
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    TopicMetadata,
)

from conveyor.brokers.stream_types import (
    CleanupPolicy,
    PartitionInfo,
    TopicConfig,
    TopicInfo,
    TopicPartition,
    TopicSpec,
)
from conveyor.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    NotSupported,
    PartitionNotFound,
    TopicNotFound,
)

UNLIMITED = -1
REFUSED_SETTINGS = (
    KafkaError.INVALID_REPLICATION_FACTOR,
    KafkaError.INVALID_PARTITIONS,
    KafkaError.INVALID_CONFIG,
)
BROKER_DEFAULT = -1  # CreateTopics: the cluster's default.replication.factor (Kafka >= 2.4)
INTERNAL_PREFIX = "__"
INTERNAL_GROUP = "conveyor-internal-"  # group ids of consumers that join no group


def topic_configs(config: TopicConfig) -> dict[str, str]:
    """Kafka's topic configs for ``config`` (every one set, so describe reads them back)."""

    def ms(value: float | None) -> str:
        return str(UNLIMITED if value is None else round(value * 1000))

    return {
        "retention.ms": ms(config.retention),  # type: ignore[arg-type]
        "retention.bytes": str(
            UNLIMITED if config.retention_bytes is None else config.retention_bytes
        ),
        "cleanup.policy": config.cleanup_policy.value,
        "max.message.bytes": str(config.max_message_bytes),
        "delete.retention.ms": ms(config.delete_retention),  # type: ignore[arg-type]
        "min.compaction.lag.ms": ms(config.min_compaction_lag),  # type: ignore[arg-type]
    }


def config_from_kafka(values: Mapping[str, str]) -> TopicConfig:
    """A TopicConfig from Kafka's configs; what is missing keeps Conveyor's default."""
    default = TopicConfig()

    def seconds_of(key: str, fallback: float | None) -> float | None:
        if key not in values:
            return fallback
        number = int(values[key])
        return None if number < 0 else number / 1000

    retention_bytes = int(values.get("retention.bytes", UNLIMITED))
    return TopicConfig(
        retention=seconds_of("retention.ms", default.retention),  # type: ignore[arg-type]
        retention_bytes=None if retention_bytes < 0 else retention_bytes,
        cleanup_policy=CleanupPolicy(
            values.get("cleanup.policy", default.cleanup_policy.value).replace(" ", "")
        ),
        max_message_bytes=int(values.get("max.message.bytes", default.max_message_bytes)),
        delete_retention=seconds_of("delete.retention.ms", default.delete_retention) or 0.0,  # type: ignore[arg-type]
        min_compaction_lag=seconds_of("min.compaction.lag.ms", 0.0) or 0.0,
    )


def error_of(exc: BaseException, *, topic: str | None = None) -> BaseException:
    """Conveyor's error for a client failure (the original is chained by the caller)."""
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    if not isinstance(error, KafkaError):
        return exc
    code = error.code()
    if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC) and topic:
        return TopicNotFound(topic)
    if code in REFUSED_SETTINGS:
        return ConfigError(f"kafka: {error.str()}")
    if code == KafkaError._UNSUPPORTED_FEATURE:
        return NotSupported(error.str(), "kafka")
    if code in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN):
        return BrokerUnavailable(f"kafka: {error.str()}")
    return BrokerError(f"kafka: {error.name()}: {error.str()}")


async def wait(future: Future[Any], *, topic: str | None = None) -> Any:
    try:
        return await asyncio.wrap_future(future)
    except KafkaException as exc:
        raise error_of(exc, topic=topic) from exc


class TopicAdmin:
    """Create, list, describe, alter and delete topics."""

    def __init__(self, admin: AdminClient, timeout: float) -> None:
        self._admin = admin
        self._timeout = timeout

    async def partition_count(self, topic: str) -> int:
        return len((await self._metadata(topic)).partitions)

    async def _metadata(self, topic: str) -> TopicMetadata:
        try:
            metadata = await asyncio.to_thread(self._admin.list_topics, topic, self._timeout)
        except KafkaException as exc:
            raise error_of(exc, topic=topic) from exc
        found = metadata.topics.get(topic)
        if found is not None and found.error is not None:
            raise error_of(KafkaException(found.error), topic=topic)
        if found is None or not found.partitions:
            raise TopicNotFound(topic)
        return found

    async def names(self) -> list[str]:
        metadata = await asyncio.to_thread(self._admin.list_topics, None, self._timeout)
        return sorted(
            name
            for name, found in metadata.topics.items()
            if found.error is None and not name.startswith(INTERNAL_PREFIX)
        )

    async def spec(self, topic: str) -> TopicSpec:
        partitions = (await self._metadata(topic)).partitions
        (future,) = self._admin.describe_configs([ConfigResource("topic", topic)]).values()
        entries = await wait(future, topic=topic)
        values = {name: entry.value for name, entry in entries.items() if entry.value is not None}
        replicas = len(partitions[0].replicas) if 0 in partitions else None
        return TopicSpec(topic, len(partitions), config_from_kafka(values), replicas or None)

    async def create(self, spec: TopicSpec) -> None:
        replication = spec.replication_factor or BROKER_DEFAULT
        new = NewTopic(spec.name, spec.partitions, replication, config=topic_configs(spec.config))
        (future,) = self._admin.create_topics([new], request_timeout=self._timeout).values()
        try:
            await asyncio.wrap_future(future)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise error_of(exc, topic=spec.name) from exc
            existing = await self.spec(spec.name)
            if existing != spec:
                raise ConfigError(
                    f"topic {spec.name!r} exists with {existing.partitions} partitions and "
                    f"config {existing.config.to_json()}; use alter_topic to change it, or "
                    "delete_topic first"
                ) from None

    async def delete(self, topic: str) -> None:
        (future,) = self._admin.delete_topics([topic], request_timeout=self._timeout).values()
        await wait(future, topic=topic)

    async def alter(
        self, topic: str, partitions: int | None, config: TopicConfig | None
    ) -> TopicSpec:
        stored = await self.spec(topic)
        if partitions is not None and partitions < stored.partitions:
            raise ConfigError(
                f"topic {topic!r} has {stored.partitions} partitions; a topic can only grow "
                "(fewer partitions would move keys and lose records)"
            )
        if partitions is not None and partitions > stored.partitions:
            grow = [NewPartitions(topic, partitions)]
            (future,) = self._admin.create_partitions(grow, request_timeout=self._timeout).values()
            await wait(future, topic=topic)
        if config is not None:
            resource = ConfigResource("topic", topic, set_config=topic_configs(config))
            (future,) = self._admin.alter_configs([resource]).values()
            await wait(future, topic=topic)
        return await self.spec(topic)

    async def offsets(
        self, partitions: Sequence[TopicPartition], spec: OffsetSpec
    ) -> dict[TopicPartition, int]:
        if not partitions:
            return {}
        asked = {KafkaPartition(tp.topic, tp.partition): spec for tp in partitions}
        futures = self._admin.list_offsets(asked, request_timeout=self._timeout)
        found: dict[TopicPartition, int] = {}
        for kafka_partition, future in futures.items():
            result = await wait(future, topic=kafka_partition.topic)
            found[TopicPartition(kafka_partition.topic, kafka_partition.partition)] = result.offset
        return found

    async def check_partitions(self, partitions: Sequence[TopicPartition]) -> None:
        counts: dict[str, int] = {}
        for topic, partition in partitions:
            if topic not in counts:
                counts[topic] = await self.partition_count(topic)
            if not 0 <= partition < counts[topic]:
                raise PartitionNotFound(topic, partition, counts[topic])

    async def describe(self, topic: str) -> TopicInfo:
        spec = await self.spec(topic)
        partitions = [TopicPartition(topic, p) for p in range(spec.partitions)]
        starts = await self.offsets(partitions, OffsetSpec.earliest())
        ends = await self.offsets(partitions, OffsetSpec.latest())
        infos = tuple(
            PartitionInfo(tp.partition, starts[tp], ends[tp], ends[tp] - starts[tp], 0)
            for tp in partitions
        )
        return TopicInfo(spec, infos)
