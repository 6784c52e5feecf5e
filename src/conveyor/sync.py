"""Blocking forms of the broker calls, for code that has no event loop."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

from conveyor._portal import Portal
from conveyor.brokers.stream_types import (
    GroupInfo,
    Membership,
    OffsetCommit,
    ProducerBatch,
    ProducerRecord,
    Record,
    RecordMetadata,
    RetentionReport,
    TopicConfig,
    TopicInfo,
    TopicPartition,
    TopicSpec,
)
from conveyor.brokers.types import (
    Binding,
    Delivery,
    ExchangeSpec,
    ExchangeStats,
    JobRecord,
    JobSubmission,
    QueuedMessage,
    QueueSpec,
    QueueStats,
    Settlement,
)
from conveyor.message import Message

if TYPE_CHECKING:
    from conveyor.brokers.base import Broker


class SyncBroker:
    """Blocking facade over a Broker; each call runs on a private background event loop.

    Every public coroutine of Broker has its blocking twin here, with the same signature
    (a unit test holds them together), so no operation is async-only.
    """

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._portal = Portal()

    def __enter__(self) -> Self:
        self._portal.call(self.broker.connect())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._portal.call(self.broker.close())
        finally:
            self._portal.close()

    def ack(self, delivery: Delivery) -> None:
        self._portal.call(self.broker.ack(delivery))

    def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        self._portal.call(self.broker.ack_many(deliveries))

    def alter_topic(
        self, name: str, *, partitions: int | None = None, config: TopicConfig | None = None
    ) -> TopicSpec:
        return self._portal.call(
            self.broker.alter_topic(name, partitions=partitions, config=config)
        )

    def bind(self, binding: Binding) -> None:
        self._portal.call(self.broker.bind(binding))

    def browse(self, queue: str, *, limit: int = 100, offset: int = 0) -> list[QueuedMessage]:
        return self._portal.call(self.broker.browse(queue, limit=limit, offset=offset))

    def commit_offsets(self, commit: OffsetCommit) -> None:
        self._portal.call(self.broker.commit_offsets(commit))

    def committed_offsets(
        self, group: str, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        return self._portal.call(self.broker.committed_offsets(group, partitions))

    def create_topic(self, spec: TopicSpec) -> None:
        self._portal.call(self.broker.create_topic(spec))

    def declare_exchange(self, spec: ExchangeSpec) -> None:
        self._portal.call(self.broker.declare_exchange(spec))

    def declare_queue(self, spec: QueueSpec) -> None:
        self._portal.call(self.broker.declare_queue(spec))

    def delete_exchange(self, name: str) -> None:
        self._portal.call(self.broker.delete_exchange(name))

    def delete_group(self, group: str) -> None:
        self._portal.call(self.broker.delete_group(group))

    def delete_queue(self, name: str) -> int:
        return self._portal.call(self.broker.delete_queue(name))

    def delete_topic(self, name: str) -> None:
        self._portal.call(self.broker.delete_topic(name))

    def describe_group(self, group: str) -> GroupInfo:
        return self._portal.call(self.broker.describe_group(group))

    def describe_topic(self, name: str) -> TopicInfo:
        return self._portal.call(self.broker.describe_topic(name))

    def enforce_retention(self, topic: str | None = None) -> RetentionReport:
        return self._portal.call(self.broker.enforce_retention(topic))

    def exchange_stats(self, name: str) -> ExchangeStats:
        return self._portal.call(self.broker.exchange_stats(name))

    def extend_lease(self, delivery: Delivery, seconds: float) -> Delivery:
        return self._portal.call(self.broker.extend_lease(delivery, seconds))

    def fetch(
        self, positions: Mapping[TopicPartition, int], *, max_records: int = 500, wait: float = 0.0
    ) -> list[Record]:
        return self._portal.call(self.broker.fetch(positions, max_records=max_records, wait=wait))

    def get(self, queue: str, *, lease_timeout: float | None = None) -> Delivery | None:
        return self._portal.call(self.broker.get(queue, lease_timeout=lease_timeout))

    def heartbeat_group(
        self, group: str, member_id: str, *, release: Sequence[TopicPartition] = ()
    ) -> Membership:
        return self._portal.call(self.broker.heartbeat_group(group, member_id, release=release))

    def join_group(
        self,
        group: str,
        topics: Sequence[str],
        *,
        member_id: str | None = None,
        session_timeout: float = 10.0,
        assignor: str = "range",
    ) -> Membership:
        return self._portal.call(
            self.broker.join_group(
                group,
                topics,
                member_id=member_id,
                session_timeout=session_timeout,
                assignor=assignor,
            )
        )

    def leave_group(self, group: str, member_id: str) -> None:
        self._portal.call(self.broker.leave_group(group, member_id))

    def list_exchanges(
        self,
    ) -> list[ExchangeSpec]:
        return self._portal.call(self.broker.list_exchanges())

    def list_groups(
        self,
    ) -> list[str]:
        return self._portal.call(self.broker.list_groups())

    def list_offsets(
        self, partitions: Sequence[TopicPartition], *, at: str | float = "latest"
    ) -> dict[TopicPartition, int]:
        return self._portal.call(self.broker.list_offsets(partitions, at=at))

    def list_queues(
        self,
    ) -> list[QueueSpec]:
        return self._portal.call(self.broker.list_queues())

    def list_topics(
        self,
    ) -> list[TopicSpec]:
        return self._portal.call(self.broker.list_topics())

    def move_messages(
        self, queue: str, to_queue: str, *, message_ids: Sequence[str] | None = None
    ) -> int:
        return self._portal.call(
            self.broker.move_messages(queue, to_queue, message_ids=message_ids)
        )

    def nack(self, delivery: Delivery, *, requeue: bool = True, delay: float = 0.0) -> None:
        self._portal.call(self.broker.nack(delivery, requeue=requeue, delay=delay))

    def persistence(self) -> str | None:
        return self._portal.call(self.broker.persistence())

    def ping(
        self,
    ) -> None:
        self._portal.call(self.broker.ping())

    def produce(
        self,
        topic: str,
        records: Sequence[ProducerRecord],
        *,
        batch: ProducerBatch | None = None,
        commit: OffsetCommit | None = None,
    ) -> list[RecordMetadata]:
        return self._portal.call(self.broker.produce(topic, records, batch=batch, commit=commit))

    def publish(
        self, message: Message, *, exchange: str = "", mandatory: bool = False, delay: float = 0.0
    ) -> int:
        return self._portal.call(
            self.broker.publish(message, exchange=exchange, mandatory=mandatory, delay=delay)
        )

    def publish_batch(
        self,
        messages: Sequence[Message],
        *,
        exchange: str = "",
        mandatory: bool = False,
        delay: float = 0.0,
    ) -> list[int]:
        return self._portal.call(
            self.broker.publish_batch(messages, exchange=exchange, mandatory=mandatory, delay=delay)
        )

    def purge_queue(self, name: str) -> int:
        return self._portal.call(self.broker.purge_queue(name))

    def queue_stats(self, name: str) -> QueueStats:
        return self._portal.call(self.broker.queue_stats(name))

    def receive(
        self,
        queue: str,
        *,
        max_messages: int = 1,
        lease_timeout: float | None = None,
        wait: float = 0.0,
    ) -> list[Delivery]:
        return self._portal.call(
            self.broker.receive(
                queue, max_messages=max_messages, lease_timeout=lease_timeout, wait=wait
            )
        )

    def reject(self, delivery: Delivery) -> None:
        self._portal.call(self.broker.reject(delivery))

    def release(self, deliveries: Sequence[Delivery]) -> None:
        self._portal.call(self.broker.release(deliveries))

    def settle(self, settlements: Sequence[Settlement]) -> list[Settlement]:
        return self._portal.call(self.broker.settle(settlements))

    def submit_jobs(self, submissions: Sequence[JobSubmission]) -> list[JobRecord]:
        return self._portal.call(self.broker.submit_jobs(submissions))

    def unbind(self, binding: Binding) -> None:
        self._portal.call(self.broker.unbind(binding))
