"""The Broker interface: the one seam every backend implements.

A backend declares its ``capabilities``; the conformance suite (tests/conformance) runs
unchanged against every backend for what it declares. Methods of a capability a backend
lacks raise ``NotSupported`` naming the backends that have it: nothing is emulated silently.

Queues give at-least-once delivery: a received message is held, not removed, and comes
back to the queue (``redelivered``) if it is not acknowledged: when its lease lapses
(LEASES), or when the consumer's connection drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, Self

from conveyor.brokers.capabilities import Capability
from conveyor.brokers.coordinated import CoordinatedConsumer
from conveyor.brokers.group_consumer import GroupConsumer
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
    seconds,
)
from conveyor.errors import ConfigError, LeaseLost, NotSupported
from conveyor.message import Message
from conveyor.settings import mask_url

if TYPE_CHECKING:
    from conveyor.brokers.results import ResultStore
    from conveyor.sync import SyncBroker


class Broker(ABC):
    """A connection to one messaging backend, opened by ``open_broker(url)``.

    Use it as an async context manager, or call ``connect()`` and ``close()``. Only the
    lifecycle is abstract: every other method belongs to a capability, and on a backend
    that does not declare it raises ``NotSupported`` naming the backends that do. Options
    that need a capability (a priority, a delay, a TTL...) are checked here, before the
    backend sees them, so no backend quietly ignores one.
    """

    scheme: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]
    private_store: ClassVar[bool] = False
    """The store exists only on this connection (an in-memory database): another
    connection to the same URL sees another, empty store."""
    blocking_submit: ClassVar[bool] = False
    """``submit_jobs_blocking`` works: the backend's transactions are blocking calls in any
    case, so code without an event loop can make them itself instead of handing each one
    to a loop on another thread and waiting for the answer."""

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def location(self) -> str:
        """Where this broker keeps its data, for people to check that two processes share
        it: the URL with its password masked, or what a backend resolves it to."""
        return mask_url(self.url)

    def require(self, *needed: Capability) -> None:
        """Raise NotSupported for the first capability this backend does not declare."""
        for capability in needed:
            if capability not in self.capabilities:
                from conveyor.brokers import backends_with

                raise NotSupported(capability.value, self.scheme, backends_with(capability))

    def _unimplemented(self, capability: Capability, method: str) -> NoReturn:
        """The default body of a capability's method: refused, or a backend's own bug."""
        self.require(capability)
        raise NotImplementedError(
            f"the {self.scheme} backend declares {capability.value} but lacks {method}"
        )

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

    def missing_store(self) -> str | None:
        """What ``connect`` would create because it is not there (a database file), or None.

        Admin commands that only read refuse to run on a store that does not exist yet.
        """
        return None

    async def persistence(self) -> str | None:
        """How the server keeps what it confirms, in words an operator reads (``/health``
        shows it), or None where the backend has nothing to add."""
        return None

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

    # topology (QUEUES, EXCHANGES): declares are idempotent; other settings raise ConfigError

    async def declare_queue(self, spec: QueueSpec) -> None:
        """Create the queue, or do nothing if it exists with the same options."""
        self.require(Capability.QUEUES, *_needed_by(spec))
        await self._declare_queue(spec)

    async def _declare_queue(self, spec: QueueSpec) -> None:
        self._unimplemented(Capability.QUEUES, "declare_queue")

    async def delete_queue(self, name: str) -> int:
        """Delete the queue, its bindings and its messages; return how many messages went."""
        self._unimplemented(Capability.QUEUES, "delete_queue")

    async def purge_queue(self, name: str) -> int:
        """Delete the queue's ready and delayed messages (not leased ones); return the count."""
        self._unimplemented(Capability.QUEUES, "purge_queue")

    async def list_queues(self) -> list[QueueSpec]:
        """Every queue, sorted by name."""
        self._unimplemented(Capability.QUEUES, "list_queues")

    async def queue_stats(self, name: str) -> QueueStats:
        """Depth by state, age of the oldest waiting message, and lifetime counters."""
        self._unimplemented(Capability.QUEUES, "queue_stats")

    async def declare_exchange(self, spec: ExchangeSpec) -> None:
        """Create the exchange, or do nothing if it exists with the same type."""
        self._unimplemented(Capability.EXCHANGES, "declare_exchange")

    async def delete_exchange(self, name: str) -> None:
        """Delete the exchange and its bindings; queues and messages stay."""
        self._unimplemented(Capability.EXCHANGES, "delete_exchange")

    async def exchange_stats(self, name: str) -> ExchangeStats:
        """The exchange's type and bindings, and how many unroutable messages it dropped.

        ``""`` is the default exchange, which has no bindings.
        """
        self._unimplemented(Capability.EXCHANGES, "exchange_stats")

    async def list_exchanges(self) -> list[ExchangeSpec]:
        """Every declared exchange, sorted by name (the default exchange ``""`` is not one)."""
        self._unimplemented(Capability.EXCHANGES, "list_exchanges")

    async def bind(self, binding: Binding) -> None:
        """Route matching messages from the exchange to the queue. Idempotent."""
        self._unimplemented(Capability.EXCHANGES, "bind")

    async def unbind(self, binding: Binding) -> None:
        """Remove the binding if it exists."""
        self._unimplemented(Capability.EXCHANGES, "unbind")

    # publishing (QUEUES): returns only once the message is stored (a publisher confirm)

    async def publish_batch(
        self,
        messages: Sequence[Message],
        *,
        exchange: str = "",
        mandatory: bool = False,
        delay: float = 0.0,
    ) -> list[int]:
        """Store messages, all or none where ATOMIC_BATCH_PUBLISH is declared.

        Routes each message through ``exchange`` (the default exchange ``""`` routes by
        routing key to the queue of that name) and returns, per message, how many queues it
        reached. A message no queue takes goes to the exchange's alternate exchange if it has
        one; otherwise ``mandatory`` raises Unroutable, else it is dropped and counted.
        ``delay`` holds the messages back for that many seconds. Raises QueueFull; with
        ATOMIC_BATCH_PUBLISH nothing was then stored.
        """
        delay = seconds(delay, "delay") or 0.0
        self.require(Capability.QUEUES)
        if delay:
            self.require(Capability.DELAYS)
        for message in messages:
            if message.priority:
                self.require(Capability.PRIORITIES)
            if message.ttl is not None:
                self.require(Capability.TTL)
        return await self._publish_batch(
            messages, exchange=exchange, mandatory=mandatory, delay=delay
        )

    async def _publish_batch(
        self, messages: Sequence[Message], *, exchange: str, mandatory: bool, delay: float
    ) -> list[int]:
        self._unimplemented(Capability.QUEUES, "publish_batch")

    async def publish(
        self, message: Message, *, exchange: str = "", mandatory: bool = False, delay: float = 0.0
    ) -> int:
        """Publish one message; see ``publish_batch``."""
        (routed,) = await self.publish_batch(
            [message], exchange=exchange, mandatory=mandatory, delay=delay
        )
        return routed

    # consuming (QUEUES): at-least-once

    async def receive(
        self,
        queue: str,
        *,
        max_messages: int = 1,
        lease_timeout: float | None = None,
        wait: float = 0.0,
    ) -> list[Delivery]:
        """Take up to ``max_messages`` ready messages, highest priority first, FIFO within one.

        Waits up to ``wait`` seconds for the first message. With LEASES each delivery is
        leased for ``lease_timeout`` seconds (default: the queue's); without, it is held
        until settled or until this connection drops. The delivery count grows when a
        message is delivered, so a consumer that crashes still uses up an attempt; with
        DELIVERY_LIMIT a message at its queue's limit is dead-lettered instead.
        """
        self._unimplemented(Capability.QUEUES, "receive")

    async def get(self, queue: str, *, lease_timeout: float | None = None) -> Delivery | None:
        """Take one message if one is ready now (a pull, like AMQP basic.get)."""
        deliveries = await self.receive(queue, max_messages=1, lease_timeout=lease_timeout)
        return deliveries[0] if deliveries else None

    def consume(
        self, queue: str, *, prefetch: int = 100, lease_timeout: float | None = None
    ) -> Consumer:
        """Push-style consumption: an async iterator of deliveries (see Consumer)."""
        self.require(Capability.QUEUES)
        return Consumer(self, queue, prefetch=prefetch, lease_timeout=lease_timeout)

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Remove the messages for good.

        With FENCED_ACKS, acks every delivery whose lease still holds, then raises
        LeaseLost if any had lapsed (those messages are, or will be, redelivered).
        """
        self._unimplemented(Capability.QUEUES, "ack_many")

    async def ack(self, delivery: Delivery) -> None:
        await self.ack_many([delivery])

    async def nack(self, delivery: Delivery, *, requeue: bool = True, delay: float = 0.0) -> None:
        """Give the message back.

        With ``requeue`` it becomes ready again (after ``delay`` seconds, which needs
        DELAYS), keeping its delivery count; without, it is dead-lettered with reason
        "rejected", or dropped if the queue has no dead-letter exchange. With FENCED_ACKS,
        raises LeaseLost if the lease lapsed.
        """
        delay = seconds(delay, "delay") or 0.0
        if delay and requeue:
            self.require(Capability.DELAYS)
        await self._nack(delivery, requeue=requeue, delay=delay)

    async def _nack(self, delivery: Delivery, *, requeue: bool, delay: float) -> None:
        self._unimplemented(Capability.QUEUES, "nack")

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        """Give back deliveries that were never worked on.

        With UNCOUNTED_RELEASE they come back as if never delivered (a worker stopping with
        prefetched work must not use up its jobs' retries); otherwise they are requeued
        and the delivery counts. Lapsed leases are skipped.
        """
        self.require(Capability.QUEUES)
        for delivery in deliveries:
            with contextlib.suppress(LeaseLost):
                await self.nack(delivery, requeue=True)

    async def reject(self, delivery: Delivery) -> None:
        """Dead-letter (or drop) the message: ``nack(requeue=False)``."""
        await self.nack(delivery, requeue=False)

    async def extend_lease(self, delivery: Delivery, seconds: float) -> Delivery:
        """Hold the lease ``seconds`` from now; returns the delivery with its new deadline.

        Raises LeaseLost if the lease already lapsed.
        """
        self._unimplemented(Capability.LEASE_EXTENSION, "extend_lease")

    # browsing and moving (BROWSE), for operators and dead-letter tooling

    async def browse(self, queue: str, *, limit: int = 100, offset: int = 0) -> list[QueuedMessage]:
        """Messages in delivery order, without leasing or changing them."""
        self._unimplemented(Capability.BROWSE, "browse")

    async def move_messages(
        self, queue: str, to_queue: str, *, message_ids: Sequence[str] | None = None
    ) -> int:
        """Move waiting (not leased) messages to another queue as new deliveries.

        ``message_ids=None`` moves all. Returns how many moved. Atomic.
        """
        self._unimplemented(Capability.BROWSE, "move_messages")

    # jobs: the broker's own result store (RESULTS), and settling in one step (ATOMIC_SETTLE)

    def results(self) -> ResultStore:
        """The ResultStore kept in this broker's own store, sharing its connection."""
        self._unimplemented(Capability.RESULTS, "results")

    async def submit_jobs(self, submissions: Sequence[JobSubmission]) -> list[JobRecord]:
        """Record each job in ``results()`` and enqueue its message, in one transaction.

        A submission matched by its idempotency key returns the existing job and enqueues
        nothing.
        """
        self._unimplemented(Capability.ATOMIC_SETTLE, "submit_jobs")

    def submit_jobs_blocking(self, submissions: Sequence[JobSubmission]) -> list[JobRecord]:
        """``submit_jobs`` in the calling thread, where ``blocking_submit`` says it works."""
        raise NotImplementedError(
            f"the {self.scheme} backend submits jobs only from an event loop: "
            "check blocking_submit first"
        )

    async def settle(self, settlements: Sequence[Settlement]) -> list[Settlement]:
        """Settle delivered jobs: message and record in ``results()`` change together.

        Returns the settlements whose lease had lapsed (those messages are redelivered and
        their records are left unchanged).
        """
        self._unimplemented(Capability.ATOMIC_SETTLE, "settle")

    # streams (STREAMS): partitioned, offset-addressed logs kept by retention

    async def create_topic(self, spec: TopicSpec) -> None:
        """Create the topic, or do nothing if it exists with the same partitions and config.

        A topic that exists with other settings raises ConfigError (use ``alter_topic``).
        """
        self._unimplemented(Capability.STREAMS, "create_topic")

    async def delete_topic(self, name: str) -> None:
        """Delete the topic, its records and the groups' offsets on it."""
        self._unimplemented(Capability.STREAMS, "delete_topic")

    async def list_topics(self) -> list[TopicSpec]:
        self._unimplemented(Capability.STREAMS, "list_topics")

    async def describe_topic(self, name: str) -> TopicInfo:
        """The topic's spec and each partition's log start and end offsets."""
        self._unimplemented(Capability.STREAMS, "describe_topic")

    async def alter_topic(
        self, name: str, *, partitions: int | None = None, config: TopicConfig | None = None
    ) -> TopicSpec:
        """Add partitions (never fewer: keys would move) and/or replace the config."""
        self._unimplemented(Capability.STREAMS, "alter_topic")

    async def produce(
        self,
        topic: str,
        records: Sequence[ProducerRecord],
        *,
        batch: ProducerBatch | None = None,
        commit: OffsetCommit | None = None,
    ) -> list[RecordMetadata]:
        """Append records and return where each landed.

        All or none on the embedded engine, and on Kafka with ``commit`` (a transaction);
        a plain Kafka produce goes partition by partition, so a failure part-way (a record
        too large, a partition away) may leave the others appended, and the call raises.

        ``batch`` makes the call idempotent (IDEMPOTENT_PRODUCE, see ProducerBatch).
        ``commit`` stores a group's offsets in the same transaction (TRANSACTIONAL_PRODUCE):
        consume-transform-produce exactly once.
        """
        self.require(Capability.STREAMS)
        if batch is not None:
            self.require(Capability.IDEMPOTENT_PRODUCE)
        if commit is not None:
            self.require(Capability.TRANSACTIONAL_PRODUCE)
        return await self._produce(topic, records, batch=batch, commit=commit)

    async def _produce(
        self,
        topic: str,
        records: Sequence[ProducerRecord],
        *,
        batch: ProducerBatch | None,
        commit: OffsetCommit | None,
    ) -> list[RecordMetadata]:
        self._unimplemented(Capability.STREAMS, "produce")

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
        self._unimplemented(Capability.STREAMS, "fetch")

    async def list_offsets(
        self, partitions: Sequence[TopicPartition], *, at: str | float = "latest"
    ) -> dict[TopicPartition, int]:
        """Per partition: ``"earliest"`` (log start), ``"latest"`` (log end), or for a
        timestamp the first offset whose timestamp is at or after it (the end if none)."""
        self._unimplemented(Capability.STREAMS, "list_offsets")

    async def enforce_retention(self, topic: str | None = None) -> RetentionReport:
        """Run one retention and compaction pass now (it also runs in the background)."""
        self._unimplemented(Capability.RETENTION, "enforce_retention")

    # consumers of topics: as a group member (CONSUMER_GROUPS), or by assigned partitions

    def open_group(self, topics: Sequence[str], group: str, **options: Any) -> GroupConsumer:
        """A consumer of ``topics`` in ``group``; see CoordinatedConsumer for the options.

        This default coordinates through the group calls below, in the broker's own store;
        an engine with a group protocol of its own returns its client's consumer instead.
        """
        self.require(Capability.STREAMS, Capability.CONSUMER_GROUPS, Capability.GROUP_COORDINATION)
        return CoordinatedConsumer(self, topics, group=group, **options)

    def open_assigned(
        self, partitions: Sequence[tuple[str, int]], *, group: str | None = None, **options: Any
    ) -> GroupConsumer:
        """A consumer of the given partitions, no membership; ``group`` keeps its offsets."""
        self.require(Capability.STREAMS)
        if group is not None:
            self.require(Capability.CONSUMER_GROUPS)
        return CoordinatedConsumer(self, assign=partitions, group=group, **options)

    # consumer groups: membership (GROUP_COORDINATION), offsets and admin (CONSUMER_GROUPS)

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
        self._unimplemented(Capability.GROUP_COORDINATION, "join_group")

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
        self._unimplemented(Capability.GROUP_COORDINATION, "heartbeat_group")

    async def leave_group(self, group: str, member_id: str) -> None:
        """Leave at once: the member's partitions go to the others without waiting."""
        self._unimplemented(Capability.GROUP_COORDINATION, "leave_group")

    async def commit_offsets(self, commit: OffsetCommit) -> None:
        """Store the group's offsets; MemberFenced if the member no longer owns a partition."""
        self._unimplemented(Capability.CONSUMER_GROUPS, "commit_offsets")

    async def committed_offsets(
        self, group: str, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        """The group's committed offsets (all of them without ``partitions``)."""
        self._unimplemented(Capability.CONSUMER_GROUPS, "committed_offsets")

    async def list_groups(self) -> list[str]:
        self._unimplemented(Capability.CONSUMER_GROUPS, "list_groups")

    async def describe_group(self, group: str) -> GroupInfo:
        self._unimplemented(Capability.CONSUMER_GROUPS, "describe_group")

    async def delete_group(self, group: str) -> None:
        """Forget the group and its offsets; refused while it has members."""
        self._unimplemented(Capability.CONSUMER_GROUPS, "delete_group")

    def sync(self) -> SyncBroker:
        """A blocking facade for code without an event loop (scripts, WSGI apps)."""
        from conveyor.sync import SyncBroker

        return SyncBroker(self)


def _needed_by(spec: QueueSpec) -> list[Capability]:
    """The capabilities a queue's options rely on."""
    needed = []
    if spec.max_priority is not None:
        needed.append(Capability.PRIORITIES)
    if spec.message_ttl is not None or spec.expires is not None:
        needed.append(Capability.TTL)
    if spec.max_length is not None or spec.max_bytes is not None:
        needed.append(Capability.MAX_LENGTH)
    if spec.dead_letter_exchange is not None:
        needed.append(Capability.DEAD_LETTER)
    if spec.delivery_limit is not None:
        needed.append(Capability.DELIVERY_LIMIT)
    return needed


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
        self._unsettled: dict[int, float] = {}  # tag -> lease deadline (inf: none)
        self._settled = asyncio.Event()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivery:
        while not self._buffer:
            room = self.prefetch - self._in_flight()
            if room <= 0:
                self._settled.clear()
                earliest = min(self._unsettled.values())
                pause = None if math.isinf(earliest) else max(earliest - time.time(), 0)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._settled.wait()
                continue
            self._buffer.extend(
                await self.broker.receive(
                    self.queue, max_messages=room, lease_timeout=self.lease_timeout, wait=1.0
                )
            )
        delivery = self._buffer.popleft()
        deadline = delivery.lease_deadline
        self._unsettled[delivery.tag] = math.inf if deadline is None else deadline
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
