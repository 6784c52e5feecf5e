"""The Broker interface: the one seam every backend implements.

A backend declares its ``capabilities``; the conformance suite (tests/conformance) runs
unchanged against every backend for what it declares. Methods of a capability a backend
lacks raise ``NotSupported`` naming the backends that have it: nothing is emulated silently.

Queues give at-least-once delivery: a received message is leased, not removed, and comes
back to the queue (``redelivered``) if its lease lapses before an ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from enum import StrEnum
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Self

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
    DURATION_BUCKETS,
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
    TaskStats,
    WorkerInfo,
)
from conveyor.errors import ConfigError, LeaseLost, NotSupported
from conveyor.message import Message

if TYPE_CHECKING:
    from conveyor.sync import SyncBroker


class Capability(StrEnum):
    QUEUES = "queues"
    EXCHANGES = "exchanges"
    PRIORITIES = "priorities"
    DELAYS = "delays"
    TTL = "ttl"
    MAX_LENGTH = "max-length"
    DEAD_LETTER = "dead-letter"
    LEASES = "leases"
    STREAMS = "streams"
    CONSUMER_GROUPS = "consumer-groups"
    RESULTS = "results"


class Broker(ABC):
    """A connection to one messaging backend, opened by ``open_broker(url)``.

    Use it as an async context manager, or call ``connect()`` and ``close()``.
    """

    scheme: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]

    def __init__(self, url: str) -> None:
        self.url = url

    def require(self, *needed: Capability) -> None:
        """Raise NotSupported for the first capability this backend does not declare."""
        for capability in needed:
            if capability not in self.capabilities:
                from conveyor.brokers import backends_with

                raise NotSupported(capability.value, self.scheme, backends_with(capability))

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # lifecycle

    @abstractmethod
    async def connect(self) -> None:
        """Open connections and check the store is usable (for files: header and schema).

        Idempotent. Damage deeper inside a file surfaces on the operation that meets it.
        """

    @abstractmethod
    async def close(self) -> None:
        """Release connections. Leased messages stay leased until their lease lapses."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise BrokerUnavailable unless the backend answers."""

    # topology: declares are idempotent; redeclaring with other settings raises ConfigError

    @abstractmethod
    async def declare_queue(self, spec: QueueSpec) -> None:
        """Create the queue, or do nothing if it exists with the same options."""

    @abstractmethod
    async def delete_queue(self, name: str) -> int:
        """Delete the queue, its bindings and its messages; return how many messages went."""

    @abstractmethod
    async def purge_queue(self, name: str) -> int:
        """Delete the queue's ready and delayed messages (not leased ones); return the count."""

    @abstractmethod
    async def list_queues(self) -> list[QueueSpec]:
        """Every queue, sorted by name."""

    @abstractmethod
    async def queue_stats(self, name: str) -> QueueStats:
        """Depth by state, age of the oldest waiting message, and lifetime counters."""

    @abstractmethod
    async def declare_exchange(self, spec: ExchangeSpec) -> None:
        """Create the exchange, or do nothing if it exists with the same type."""

    @abstractmethod
    async def delete_exchange(self, name: str) -> None:
        """Delete the exchange and its bindings; queues and messages stay."""

    @abstractmethod
    async def exchange_stats(self, name: str) -> ExchangeStats:
        """The exchange's type and bindings, and how many unroutable messages it dropped.

        ``""`` is the default exchange, which has no bindings.
        """

    async def list_exchanges(self) -> list[ExchangeSpec]:
        """Every declared exchange, sorted by name (the default exchange ``""`` is not one)."""
        self.require(Capability.EXCHANGES)
        raise NotImplementedError

    @abstractmethod
    async def bind(self, binding: Binding) -> None:
        """Route matching messages from the exchange to the queue. Idempotent."""

    @abstractmethod
    async def unbind(self, binding: Binding) -> None:
        """Remove the binding if it exists."""

    # publishing: returns only once the message is stored (a publisher confirm)

    @abstractmethod
    async def publish_batch(
        self,
        messages: Sequence[Message],
        *,
        exchange: str = "",
        mandatory: bool = False,
        delay: float = 0.0,
    ) -> list[int]:
        """Store messages atomically: all are routed and stored, or none is.

        Routes each message through ``exchange`` (the default exchange ``""`` routes by
        routing key to the queue of that name) and returns, per message, how many queues it
        reached. A message no queue takes goes to the exchange's alternate exchange if it has
        one; otherwise ``mandatory`` raises Unroutable, else it is dropped and counted.
        ``delay`` holds the messages back for that many seconds. Raises QueueFull, in which
        case nothing was stored.
        """

    async def publish(
        self, message: Message, *, exchange: str = "", mandatory: bool = False, delay: float = 0.0
    ) -> int:
        """Publish one message; see ``publish_batch``."""
        (routed,) = await self.publish_batch(
            [message], exchange=exchange, mandatory=mandatory, delay=delay
        )
        return routed

    # consuming: at-least-once, by lease

    @abstractmethod
    async def receive(
        self,
        queue: str,
        *,
        max_messages: int = 1,
        lease_timeout: float | None = None,
        wait: float = 0.0,
    ) -> list[Delivery]:
        """Lease up to ``max_messages`` ready messages, highest priority first, FIFO within one.

        Waits up to ``wait`` seconds for the first message. Each lease lasts
        ``lease_timeout`` seconds (default: the queue's); the delivery count grows when the
        lease is taken, so a consumer that crashes still uses up an attempt. A message at its
        queue's delivery limit is dead-lettered instead of delivered.
        """

    async def get(self, queue: str, *, lease_timeout: float | None = None) -> Delivery | None:
        """Lease one message if one is ready now (a pull, like AMQP basic.get)."""
        deliveries = await self.receive(queue, max_messages=1, lease_timeout=lease_timeout)
        return deliveries[0] if deliveries else None

    def consume(
        self, queue: str, *, prefetch: int = 100, lease_timeout: float | None = None
    ) -> Consumer:
        """Push-style consumption: an async iterator of deliveries (see Consumer)."""
        return Consumer(self, queue, prefetch=prefetch, lease_timeout=lease_timeout)

    @abstractmethod
    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Remove the messages for good, in one step.

        Acks every delivery whose lease still holds, then raises LeaseLost if any lease had
        lapsed (those messages are, or will be, redelivered).
        """

    async def ack(self, delivery: Delivery) -> None:
        await self.ack_many([delivery])

    @abstractmethod
    async def nack(self, delivery: Delivery, *, requeue: bool = True, delay: float = 0.0) -> None:
        """Give the message back.

        With ``requeue`` it becomes ready again (after ``delay`` seconds), keeping its
        delivery count; without, it is dead-lettered with reason "rejected", or dropped if the
        queue has no dead-letter exchange. Raises LeaseLost if the lease lapsed.
        """

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        """Give back leased messages that were never worked on, as if never delivered.

        Unlike ``nack``, the delivery does not count as an attempt (a worker stopping
        with prefetched work must not use up its jobs' retries). Lapsed leases are skipped.
        Backends that cannot take a delivery back uncounted requeue it counted.
        """
        for delivery in deliveries:
            with contextlib.suppress(LeaseLost):
                await self.nack(delivery, requeue=True)

    async def reject(self, delivery: Delivery) -> None:
        """Dead-letter (or drop) the message: ``nack(requeue=False)``."""
        await self.nack(delivery, requeue=False)

    @abstractmethod
    async def extend_lease(self, delivery: Delivery, seconds: float) -> Delivery:
        """Hold the lease ``seconds`` from now; returns the delivery with its new deadline.

        Raises LeaseLost if the lease already lapsed.
        """

    # browsing and moving, for operators and dead-letter tooling

    async def browse(self, queue: str, *, limit: int = 100, offset: int = 0) -> list[QueuedMessage]:
        """Messages in delivery order, without leasing or changing them."""
        raise NotSupported("browse", self.scheme)

    async def move_messages(
        self, queue: str, to_queue: str, *, message_ids: Sequence[str] | None = None
    ) -> int:
        """Move waiting (not leased) messages to another queue as new deliveries.

        ``message_ids=None`` moves all. Jobs whose messages move become queued again.
        Returns how many moved. Atomic.
        """
        raise NotSupported("move_messages", self.scheme)

    # jobs (Capability.RESULTS)

    async def submit_jobs(self, submissions: Sequence[JobSubmission]) -> list[JobRecord]:
        """Record each job and enqueue its message, in one step where the backend can.

        Returns the records; a submission matched by its idempotency key returns the
        existing job and enqueues nothing.
        """
        self.require(Capability.RESULTS)
        raise NotImplementedError

    async def get_job(self, job_id: str) -> JobRecord:
        """The job's record, with ``running`` derived from a live lease. Raises JobNotFound."""
        self.require(Capability.RESULTS)
        raise NotImplementedError

    async def settle(self, settlements: Sequence[Settlement]) -> list[Settlement]:
        """Settle delivered jobs: message and record change together.

        Returns the settlements whose lease had lapsed (those messages are redelivered and
        their records are left unchanged).
        """
        self.require(Capability.RESULTS)
        raise NotImplementedError

    async def set_progress(self, job_id: str, progress: object) -> None:
        """Store a running job's progress (any JSON value)."""
        self.require(Capability.RESULTS)

    async def cancel_job(self, job_id: str) -> bool:
        """Cancel a job that has not started: True if it was cancelled, False if too late."""
        self.require(Capability.RESULTS)
        raise NotImplementedError

    async def succeeded_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of these idempotency keys belong to a job that already succeeded."""
        self.require(Capability.RESULTS)
        raise NotImplementedError

    async def job_stats(
        self, *, since: float | None = None, buckets: Sequence[float] = DURATION_BUCKETS
    ) -> list[TaskStats]:
        """Per task, sorted by name: the kept job records by status and a histogram of how
        long finished jobs ran (see TaskStats), with ``buckets`` as its upper bounds.

        ``since`` (epoch seconds) counts only records updated at or after it: with the
        finished statuses, the jobs that finished since then. For metrics and health
        checks; on the embedded broker it reads every kept record, so cache what it returns.
        """
        self.require(Capability.RESULTS)
        raise NotImplementedError

    # coordination between worker processes (Capability.RESULTS)

    async def heartbeat(self, worker: WorkerInfo) -> None:
        """Record a worker as alive now."""
        self.require(Capability.RESULTS)

    async def list_workers(self) -> list[WorkerInfo]:
        self.require(Capability.RESULTS)
        raise NotImplementedError

    async def forget_worker(self, worker_id: str) -> None:
        self.require(Capability.RESULTS)

    async def acquire_rate(self, key: str, *, per_second: float, burst: int) -> float:
        """Take one token from a bucket shared by every process; 0.0 if taken, else the
        seconds until one frees up (nothing taken)."""
        self.require(Capability.RESULTS)
        raise NotImplementedError

    # streams (Capability.STREAMS): partitioned, offset-addressed logs kept by retention

    async def create_topic(self, spec: TopicSpec) -> None:
        """Create the topic, or do nothing if it exists with the same partitions and config.

        A topic that exists with other settings raises ConfigError (use ``alter_topic``).
        """
        self.require(Capability.STREAMS)

    async def delete_topic(self, name: str) -> None:
        """Delete the topic, its records and the groups' offsets on it."""
        self.require(Capability.STREAMS)

    async def list_topics(self) -> list[TopicSpec]:
        self.require(Capability.STREAMS)
        raise NotImplementedError

    async def describe_topic(self, name: str) -> TopicInfo:
        """The topic's spec and each partition's log start and end offsets."""
        self.require(Capability.STREAMS)
        raise NotImplementedError

    async def alter_topic(
        self, name: str, *, partitions: int | None = None, config: TopicConfig | None = None
    ) -> TopicSpec:
        """Add partitions (never fewer: keys would move) and/or replace the config."""
        self.require(Capability.STREAMS)
        raise NotImplementedError

    async def produce(
        self,
        topic: str,
        records: Sequence[ProducerRecord],
        *,
        batch: ProducerBatch | None = None,
        commit: OffsetCommit | None = None,
    ) -> list[RecordMetadata]:
        """Append records atomically (all or none) and return where each landed.

        ``batch`` makes the call idempotent (see ProducerBatch). ``commit`` stores a
        group's offsets in the same transaction: consume-transform-produce exactly once.
        """
        self.require(Capability.STREAMS)
        raise NotImplementedError

    async def fetch(
        self,
        positions: Mapping[TopicPartition, int],
        *,
        max_records: int = 500,
        wait: float = 0.0,
    ) -> list[Record]:
        """Records from each partition starting at its offset, in offset order per partition.

        Waits up to ``wait`` seconds for the first record. An offset before the log start
        or past the log end raises OffsetOutOfRange; an offset at the end returns nothing.
        """
        self.require(Capability.STREAMS)
        raise NotImplementedError

    async def list_offsets(
        self, partitions: Sequence[TopicPartition], *, at: str | float = "latest"
    ) -> dict[TopicPartition, int]:
        """Per partition: ``"earliest"`` (log start), ``"latest"`` (log end), or for a
        timestamp the first offset whose timestamp is at or after it (the end if none)."""
        self.require(Capability.STREAMS)
        raise NotImplementedError

    async def enforce_retention(self, topic: str | None = None) -> RetentionReport:
        """Run one retention and compaction pass now (it also runs in the background)."""
        self.require(Capability.STREAMS)
        raise NotImplementedError

    # consumer groups (Capability.CONSUMER_GROUPS)

    async def join_group(
        self,
        group: str,
        topics: Sequence[str],
        *,
        member_id: str | None = None,
        session_timeout: float = 10.0,
        assignor: str = "range",
    ) -> Membership:
        """Join (or rejoin) the group; the group rebalances its partitions over its members."""
        self.require(Capability.CONSUMER_GROUPS)
        raise NotImplementedError

    async def heartbeat_group(
        self,
        group: str,
        member_id: str,
        *,
        release: Sequence[TopicPartition] = (),
    ) -> Membership:
        """Stay in the group; hand back ``release``d partitions; learn the current assignment.

        Members silent past their session timeout are removed here, which rebalances.
        Raises MemberFenced if this member was removed.
        """
        self.require(Capability.CONSUMER_GROUPS)
        raise NotImplementedError

    async def leave_group(self, group: str, member_id: str) -> None:
        """Leave at once: the member's partitions go to the others without waiting."""
        self.require(Capability.CONSUMER_GROUPS)

    async def commit_offsets(self, commit: OffsetCommit) -> None:
        """Store the group's offsets; MemberFenced if the member no longer owns a partition."""
        self.require(Capability.CONSUMER_GROUPS)

    async def committed_offsets(
        self, group: str, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        """The group's committed offsets (all of them without ``partitions``)."""
        self.require(Capability.CONSUMER_GROUPS)
        raise NotImplementedError

    async def list_groups(self) -> list[str]:
        self.require(Capability.CONSUMER_GROUPS)
        raise NotImplementedError

    async def describe_group(self, group: str) -> GroupInfo:
        self.require(Capability.CONSUMER_GROUPS)
        raise NotImplementedError

    async def delete_group(self, group: str) -> None:
        """Forget the group and its offsets; refused while it has members."""
        self.require(Capability.CONSUMER_GROUPS)

    def sync(self) -> SyncBroker:
        """A blocking facade for code without an event loop (scripts, WSGI apps)."""
        from conveyor.sync import SyncBroker

        return SyncBroker(self)


class Consumer(AsyncIterator[Delivery]):
    """Deliveries pushed from a queue, at most ``prefetch`` leased and unsettled at a time.

    Settle through the consumer (``ack``, ``nack``, ``reject``) to free prefetch slots; a
    delivery whose lease lapsed stops counting against ``prefetch``.
    """

    def __init__(
        self, broker: Broker, queue: str, *, prefetch: int, lease_timeout: float | None
    ) -> None:
        if prefetch < 1:
            raise ConfigError(f"prefetch must be at least 1, not {prefetch}")
        self.broker = broker
        self.queue = queue
        self.prefetch = prefetch
        self.lease_timeout = lease_timeout
        self._buffer: deque[Delivery] = deque()
        self._unsettled: dict[int, float] = {}
        self._settled = asyncio.Event()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivery:
        while not self._buffer:
            room = self.prefetch - self._in_flight()
            if room <= 0:
                self._settled.clear()
                earliest = min(self._unsettled.values())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._settled.wait(), max(earliest - time.time(), 0))
                continue
            self._buffer.extend(
                await self.broker.receive(
                    self.queue, max_messages=room, lease_timeout=self.lease_timeout, wait=1.0
                )
            )
        delivery = self._buffer.popleft()
        self._unsettled[delivery.tag] = delivery.lease_deadline
        return delivery

    def _in_flight(self) -> int:
        now = time.time()
        lapsed = [tag for tag, deadline in self._unsettled.items() if deadline <= now]
        for tag in lapsed:
            del self._unsettled[tag]
        return len(self._unsettled) + len(self._buffer)

    async def ack(self, delivery: Delivery) -> None:
        await self.ack_many([delivery])

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        self._release(deliveries)
        await self.broker.ack_many(deliveries)

    async def nack(self, delivery: Delivery, *, requeue: bool = True, delay: float = 0.0) -> None:
        self._release([delivery])
        await self.broker.nack(delivery, requeue=requeue, delay=delay)

    def _release(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            self._unsettled.pop(delivery.tag, None)
        self._settled.set()

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        """Give back unworked deliveries uncounted: see ``Broker.release``."""
        self._release(deliveries)
        await self.broker.release(deliveries)

    async def reject(self, delivery: Delivery) -> None:
        await self.nack(delivery, requeue=False)
