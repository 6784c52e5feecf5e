"""The kafka:// backend: topics, records and consumer groups on a Kafka cluster.

Built on confluent-kafka (librdkafka), chosen by measurement (docs/benchmarks.md, "Which
Kafka client"). Queues and tasks are not Kafka's model and are refused with NotSupported
naming the backends that have them. Only what holds on the broker is declared: see
``capabilities.DECLARED`` and docs/backends.md for what was verified against which broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, OffsetSpec

from conveyor.brokers.base import Broker
from conveyor.brokers.capabilities import DECLARED, Capability
from conveyor.brokers.group_consumer import GroupConsumer
from conveyor.brokers.kafka.admin import TopicAdmin, error_of
from conveyor.brokers.kafka.group import KafkaGroupConsumer
from conveyor.brokers.kafka.groups import GroupAdmin
from conveyor.brokers.kafka.options import KafkaOptions, client_config, parse
from conveyor.brokers.kafka.producer import RecordProducer
from conveyor.brokers.kafka.reader import OutOfRange, PartitionReader
from conveyor.brokers.kafka.transactions import TransactionalProducer
from conveyor.brokers.stream_types import (
    GroupInfo,
    OffsetCommit,
    ProducerBatch,
    ProducerRecord,
    Record,
    RecordMetadata,
    TopicConfig,
    TopicInfo,
    TopicPartition,
    TopicSpec,
)
from conveyor.errors import (
    BrokerUnavailable,
    ConfigError,
    MemberFenced,
    OffsetOutOfRange,
    PartitionNotFound,
)
from conveyor.settings import mask_url

__all__ = ["KafkaBroker", "KafkaOptions"]

METADATA_MAX_AGE_S = 300.0
"""How long a topic's partition count is trusted (the Java client's metadata.max.age.ms):
a topic grown by another client places keyed records by the new count after at most this."""


class KafkaBroker(Broker):
    """A Kafka cluster at ``kafka://host:port[,host:port]`` (see KafkaOptions for the rest)."""

    scheme: ClassVar[str] = "kafka"
    capabilities: ClassVar[frozenset[Capability]] = DECLARED["kafka"]

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url)
        self.servers, self.options = parse(url, options)
        self._config = client_config(self.servers, self.options)
        self._admin_client: AdminClient | None = None
        self._topic_admin: TopicAdmin | None = None
        self._group_admin: GroupAdmin | None = None
        # (count, when counted): topics only grow, and alter_topic and delete_topic forget
        self._partition_counts: dict[str, tuple[int, float]] = {}
        self._producer: RecordProducer | None = None
        self._transactional: TransactionalProducer | None = None
        self._consumers: weakref.WeakSet[KafkaGroupConsumer] = weakref.WeakSet()
        self._group_handles: dict[str, Consumer] = {}  # unsubscribed: group metadata only
        self._reader: PartitionReader | None = None

    def __repr__(self) -> str:
        return f"KafkaBroker({mask_url(self.url)!r})"

    # lifecycle

    async def connect(self) -> None:
        if self._admin_client is not None:
            return
        self._admin_client = AdminClient(self._config)
        self._topic_admin = TopicAdmin(self._admin_client, self.options.timeout)
        self._group_admin = GroupAdmin(self._admin_client, self._topic_admin, self.options.timeout)
        try:
            await self.ping()
        except BaseException:
            self._admin_client = self._topic_admin = self._group_admin = None
            raise

    async def close(self) -> None:
        producers = [self._producer, self._transactional]
        self._producer = self._transactional = None
        reader, self._reader = self._reader, None
        for producer in producers:
            if producer is not None:
                await producer.close(self.options.timeout)
        handles, self._group_handles = list(self._group_handles.values()), {}
        for handle in handles:
            await asyncio.to_thread(handle.close)
        if reader is not None:
            await reader.close()
        self._admin_client = self._topic_admin = self._group_admin = None

    async def ping(self) -> None:
        admin = self._admin_client or AdminClient(self._config)
        timeout = min(self.options.timeout, 10.0)
        try:
            await asyncio.to_thread(admin.list_topics, None, timeout)
        except Exception as exc:
            raise BrokerUnavailable(
                f"kafka: no broker answered at {self.servers} within {timeout:g} s "
                f"({mask_url(self.url)}): {str(error_of(exc)).removeprefix('kafka: ')}"
            ) from exc

    def _admin(self) -> TopicAdmin:
        if self._topic_admin is None:
            raise ConfigError("the kafka broker is not connected: call connect() first")
        return self._topic_admin

    # streams

    async def create_topic(self, spec: TopicSpec) -> None:
        await self._admin().create(spec)

    async def delete_topic(self, name: str) -> None:
        self._partition_counts.pop(name, None)
        await self._admin().delete(name)

    async def list_topics(self) -> list[TopicSpec]:
        admin = self._admin()
        return [await admin.spec(name) for name in await admin.names()]

    async def describe_topic(self, name: str) -> TopicInfo:
        return await self._admin().describe(name)

    async def alter_topic(
        self, name: str, *, partitions: int | None = None, config: TopicConfig | None = None
    ) -> TopicSpec:
        self._partition_counts.pop(name, None)
        return await self._admin().alter(name, partitions, config)

    async def _produce(
        self,
        topic: str,
        records: Sequence[ProducerRecord],
        *,
        batch: ProducerBatch | None,
        commit: OffsetCommit | None,
    ) -> list[RecordMetadata]:
        counted = self._partition_counts.get(topic)
        if counted is None or time.monotonic() - counted[1] > METADATA_MAX_AGE_S:
            counted = await self._count_partitions(topic)
        partitions = counted[0]
        try:
            return await self._send(topic, records, partitions, commit)
        except PartitionNotFound:  # grown by another client since we counted: count again
            partitions, _ = await self._count_partitions(topic)
            return await self._send(topic, records, partitions, commit)

    async def _send(
        self,
        topic: str,
        records: Sequence[ProducerRecord],
        partitions: int,
        commit: OffsetCommit | None,
    ) -> list[RecordMetadata]:
        if commit is None:
            if self._producer is None:
                self._producer = RecordProducer(self._producer_config())
            return await self._producer.produce(topic, records, partitions)
        group_metadata = await self._group_metadata(commit)
        if self._transactional is None:
            self._transactional = TransactionalProducer(
                self._producer_config(), self.options.timeout
            )
        try:
            return await self._transactional.produce_and_commit(
                topic, records, partitions, commit.group, commit.offsets, group_metadata
            )
        except BaseException:
            # aborted; a new producer (a new transactional.id) starts clean on any broker
            failed, self._transactional = self._transactional, None
            await failed.close(self.options.timeout)
            raise

    def _producer_config(self) -> dict[str, Any]:
        return {
            **self._config,
            "acks": "all",
            "enable.idempotence": self.options.idempotence,
            "linger.ms": round(self.options.linger * 1000),
            "message.timeout.ms": round(self.options.timeout * 1000),
        }

    async def _group_metadata(self, commit: OffsetCommit) -> object:
        """What fences a transactional commit: the member's own consumer's group metadata,
        or for a commit without a member (only while the group has none) the group's."""
        if commit.member_id is not None:
            for consumer in self._consumers:
                member = consumer.membership
                if member and (member.group, member.member_id) == (commit.group, commit.member_id):
                    return consumer.group_metadata()
            raise MemberFenced(
                commit.group,
                commit.member_id,
                "no consumer of this broker is that member (on kafka:// a transactional "
                "commit is made through the broker that opened the member's consumer)",
            )
        with contextlib.suppress(ConfigError):  # no such group yet: nobody to fence
            if (await self.describe_group(commit.group)).members:
                raise MemberFenced(commit.group, "(none)", "the group has active members")
        handle = self._group_handles.get(commit.group)
        if handle is None:
            handle = Consumer({**self._config, "group.id": commit.group})
            self._group_handles[commit.group] = handle
        return handle.consumer_group_metadata()

    async def _count_partitions(self, topic: str) -> tuple[int, float]:
        counted = (await self._admin().partition_count(topic), time.monotonic())
        self._partition_counts[topic] = counted
        return counted

    async def fetch(
        self,
        positions: Mapping[TopicPartition, int],
        *,
        max_records: int = 500,
        wait: float = 0.0,
    ) -> list[Record]:
        admin = self._admin()
        await admin.check_partitions(list(positions))
        if not positions:
            return []
        if self._reader is None:
            self._reader = PartitionReader(self._config, self.options.timeout)
        try:
            return await self._reader.fetch(positions, max_records, wait)
        except OutOfRange as exc:
            tp = exc.partition
            start = (await admin.offsets([tp], OffsetSpec.earliest()))[tp]
            end = (await admin.offsets([tp], OffsetSpec.latest()))[tp]
            raise OffsetOutOfRange(tp.topic, tp.partition, positions[tp], start, end) from None

    async def list_offsets(
        self, partitions: Sequence[TopicPartition], *, at: str | float = "latest"
    ) -> dict[TopicPartition, int]:
        if at == "earliest":
            spec = OffsetSpec.earliest()
        elif at == "latest":
            spec = OffsetSpec.latest()
        elif isinstance(at, int | float) and not isinstance(at, bool):
            spec = OffsetSpec.for_timestamp(round(at * 1000))
        else:
            raise ConfigError(f"at must be 'earliest', 'latest' or a timestamp, not {at!r}")
        admin = self._admin()
        await admin.check_partitions(partitions)
        found = await admin.offsets(partitions, spec)
        if not isinstance(at, str):
            ends = await admin.offsets(
                [tp for tp, offset in found.items() if offset < 0], OffsetSpec.latest()
            )
            found.update(ends)
        return found

    # consumer groups: the brokers coordinate them; members are librdkafka consumers

    def open_group(self, topics: Sequence[str], group: str, **options: Any) -> GroupConsumer:
        """librdkafka's group consumer (see KafkaGroupConsumer); the options are those of
        the other backends' consumers."""
        consumer = KafkaGroupConsumer(self._config, self._groups(), topics, group=group, **options)
        self._consumers.add(consumer)
        return consumer

    def open_assigned(
        self, partitions: Sequence[tuple[str, int]], *, group: str | None = None, **options: Any
    ) -> GroupConsumer:
        consumer = KafkaGroupConsumer(
            self._config, self._groups(), assign=partitions, group=group, **options
        )
        self._consumers.add(consumer)
        return consumer

    def _groups(self) -> GroupAdmin:
        self._admin()
        assert self._group_admin is not None
        return self._group_admin

    async def list_groups(self) -> list[str]:
        return await self._groups().names()

    async def describe_group(self, group: str) -> GroupInfo:
        return await self._groups().describe(group)

    async def delete_group(self, group: str) -> None:
        await self._groups().delete(group)

    async def committed_offsets(
        self, group: str, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        return await self._groups().committed(group, partitions)

    async def commit_offsets(self, commit: OffsetCommit) -> None:
        """Reset a group's offsets while it has no live members (members commit through
        their consumer); MemberFenced while it has some."""
        await self._groups().reset(commit)
