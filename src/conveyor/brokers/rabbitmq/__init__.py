"""The RabbitMQ backend: ``amqp://`` and ``amqps://``, through aio-pika.

This class adapts the Broker interface onto the modules beside it: ``options`` (the URL),
``channels`` (channels that come back), ``topology``, ``publisher`` and ``sending``,
``consumer`` and ``receipts``, ``mapping`` and ``deaths`` (Message <-> AMQP), ``delays``,
``management`` and ``stats``. The connection is aio-pika's robust one: it reconnects by itself, and
every operation waits up to ``connect_timeout`` for it to come back.

There are no leases (RabbitMQ holds a delivery until it is settled or the channel that
carried it closes), so ``lease_timeout`` has no effect and a delivery's
``lease_deadline`` is None. A delivery whose channel has closed (the connection dropped)
cannot be settled: RabbitMQ has already put the message back and delivers it again, so
``ack``/``nack`` on it raise LeaseLost, which says exactly that.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aio_pika.connection import make_url

from conveyor.brokers.base import Broker
from conveyor.brokers.capabilities import DECLARED
from conveyor.brokers.rabbitmq import failures, frames, mapping, stats
from conveyor.brokers.rabbitmq.channels import Opener, Slot
from conveyor.brokers.rabbitmq.consumer import QueueReader, Received
from conveyor.brokers.rabbitmq.management import Management, ManagementUnavailable
from conveyor.brokers.rabbitmq.options import Endpoint, RabbitMQOptions, parse
from conveyor.brokers.rabbitmq.publisher import Publisher
from conveyor.brokers.rabbitmq.receipts import Receipt, ack_all, fence, settle
from conveyor.brokers.rabbitmq.sending import Sender
from conveyor.brokers.rabbitmq.topology import Topology
from conveyor.brokers.types import (
    Binding,
    Delivery,
    ExchangeSpec,
    ExchangeStats,
    QueueSpec,
    QueueStats,
)
from conveyor.brokers.types import seconds as as_seconds
from conveyor.errors import BrokerUnavailable, ConfigError, LeaseLost
from conveyor.message import Message
from conveyor.routing import ExchangeType

MAX_RECEIVE_BATCH = 10_000

_tags = itertools.count(1)


class RabbitMQBroker(Broker):
    scheme = "amqp"
    capabilities = DECLARED["amqp"]

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.endpoint, self.options = parse(url)
        self._connection: AbstractRobustConnection | None = None
        self._parts: _Parts | None = None

    def __repr__(self) -> str:
        return f"RabbitMQBroker({self.endpoint.masked!r})"

    # lifecycle

    async def connect(self) -> None:
        if self._connection is not None:
            return
        timeout = self.options.connect_timeout
        frames.install()
        connection = aio_pika.RobustConnection(
            make_url(
                host=self.endpoint.host,
                port=self.endpoint.port,
                login=self.endpoint.user,
                password=self.endpoint.password,
                virtualhost=self.endpoint.vhost,
                ssl=self.endpoint.tls,
                heartbeat=self.options.heartbeat,
                reconnect_interval=self.options.reconnect_interval,
            ),
            ssl_context=self.options.tls_context() if self.endpoint.tls else None,
            client_properties={"connection_name": self.options.connection_name},
        )
        try:
            async with asyncio.timeout(timeout):
                await connection.connect(timeout=timeout)
        except Exception as exc:
            await _close_quietly(connection)
            raise failures.connect_failure(self.endpoint, exc, timeout) from None
        self._connection = connection
        self._parts = _Parts(connection, self.endpoint, self.options)

    async def close(self) -> None:
        connection, parts = self._connection, self._parts
        self._connection = self._parts = None
        if parts is not None:
            await parts.close()
        if connection is not None:
            await _close_quietly(connection)

    async def ping(self) -> None:
        await self._running().topology.exchange_exists("amq.direct")

    def _running(self) -> _Parts:
        if self._parts is None:
            raise BrokerUnavailable(
                f"the broker for {self.endpoint.masked} is not connected; call connect()"
            )
        return self._parts

    # topology

    async def _declare_queue(self, spec: QueueSpec) -> None:
        await self._running().topology.declare_queue(spec)

    async def delete_queue(self, name: str) -> int:
        parts = self._running()
        reader = parts.readers.pop(name, None)
        if reader is not None:
            await reader.close()
        return await parts.topology.delete_queue(name)

    async def purge_queue(self, name: str) -> int:
        return await self._running().topology.purge_queue(name)

    async def list_queues(self) -> list[QueueSpec]:
        return await self._running().topology.list_queues()

    async def queue_stats(self, name: str) -> QueueStats:
        topology = self._running().topology
        ready = await topology.ready(name)
        figures = None
        if topology.management is not None:
            try:
                figures = await topology.management.queue(name)
            except ManagementUnavailable:
                figures = None
        return stats.queue_stats(name, ready, await topology.delayed(name), figures)

    async def declare_exchange(self, spec: ExchangeSpec) -> None:
        await self._running().topology.declare_exchange(spec)

    async def delete_exchange(self, name: str) -> None:
        await self._running().topology.delete_exchange(name)

    async def exchange_stats(self, name: str) -> ExchangeStats:
        topology = self._running().topology
        if not name:
            return stats.exchange_stats("", ExchangeType.DIRECT.value, [])
        await topology.exchange_exists(name)
        kind, bindings = None, None
        if topology.management is not None:
            try:
                found = await topology.management.exchange(name)
                kind = str(found.get("type")) if found else None
                bindings = await topology.management.bindings_from(name)
            except ManagementUnavailable:
                pass
        return stats.exchange_stats(name, kind, bindings)

    async def list_exchanges(self) -> list[ExchangeSpec]:
        return await self._running().topology.list_exchanges()

    async def bind(self, binding: Binding) -> None:
        await self._running().topology.bind(binding)

    async def unbind(self, binding: Binding) -> None:
        await self._running().topology.unbind(binding)

    # publishing

    async def _publish_batch(
        self, messages: Sequence[Message], *, exchange: str, mandatory: bool, delay: float
    ) -> list[int]:
        if not messages:
            return []
        return await self._running().sender.publish(
            messages, exchange=exchange, mandatory=mandatory, delay=delay
        )

    # consuming

    async def receive(
        self,
        queue: str,
        *,
        max_messages: int = 1,
        lease_timeout: float | None = None,
        wait: float = 0.0,
    ) -> list[Delivery]:
        """See Broker.receive; without LEASES, ``lease_timeout`` is checked and unused.

        ``wait=0`` asks the server for what is ready now (``basic.get``); a waiting receive
        takes pushed deliveries from the queue's consumer (see consumer).
        """
        if not 1 <= max_messages <= MAX_RECEIVE_BATCH:
            raise ConfigError(f"max_messages must be 1-{MAX_RECEIVE_BATCH}, not {max_messages}")
        as_seconds(lease_timeout, "lease_timeout", positive=True)
        waiting = as_seconds(wait, "wait") or 0.0
        parts = self._running()
        reader = parts.reader(queue)
        deadline = time.monotonic() + waiting
        while True:
            if waiting:
                remaining = max(deadline - time.monotonic(), 0.0)
                delivered = await reader.take(max_messages, remaining)
            else:
                delivered = await reader.pull(max_messages)
            deliveries = await parts.deliveries(queue, delivered)
            if deliveries or len(delivered) == 0 or time.monotonic() >= deadline:
                return deliveries

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Ack each delivery on its own channel (see receipts); LeaseLost for any that
        cannot be acked any more (see the module docstring), after acking the others."""
        receipts = {id(delivery.receipt): delivery for delivery in deliveries}
        lost = await ack_all(delivery.receipt for delivery in deliveries)
        if lost:
            first = receipts[id(lost[0])]
            raise LeaseLost(first.queue, first.message.id)

    async def _nack(self, delivery: Delivery, *, requeue: bool, delay: float) -> None:
        """Requeue, reject (RabbitMQ dead-letters natively), or retry after ``delay``.

        A delayed retry stores a copy through a delay queue (carrying the delivery count),
        waits for its confirm, then acks the original. Between the two, a crash or a lost
        connection leaves both: the original comes back at once and the copy after the
        delay, so the message is delivered twice. That is the at-least-once window; no
        message is lost in it. At the queue's ``delivery_limit``, the retry dead-letters
        the message instead (reason "rejected": the limit is Conveyor's count here, as the
        copy starts a fresh count in the quorum queue).

        Returns once the server has handled the settlement (see receipts.fence), so the
        message is back, or gone, for whatever the caller does next.
        """
        receipt: Receipt = delivery.receipt
        if not receipt.live:
            raise LeaseLost(delivery.queue, delivery.message.id)
        parts = self._running()
        if requeue and delay:
            spec = await parts.topology.spec_of(delivery.queue)
            limit = spec.delivery_limit if spec is not None else None
            if limit is None or delivery.delivery_count < limit:
                await parts.sender.retry_later(delivery, delay)
                if await settle(receipt, "ack"):
                    await fence(receipt)
                return
            requeue = False
        if not await settle(receipt, "requeue" if requeue else "reject"):
            raise LeaseLost(delivery.queue, delivery.message.id)
        await fence(receipt)


class _Parts:
    """What a connected broker works with; made on connect, dropped on close."""

    def __init__(
        self, connection: AbstractRobustConnection, endpoint: Endpoint, options: RabbitMQOptions
    ) -> None:
        self.opener = Opener(connection, endpoint, options.connect_timeout)
        self.topology = Topology(
            Slot(self.opener), _management(endpoint, options), options.queue_type
        )
        self.publisher = Publisher(self.opener)
        self.sender = Sender(self.publisher, self.topology)
        self.readers: dict[str, QueueReader] = {}

    def reader(self, queue: str) -> QueueReader:
        reader = self.readers.get(queue)
        if reader is None:
            reader = self.readers[queue] = QueueReader(queue, self.opener)
        return reader

    async def deliveries(self, queue: str, delivered: Sequence[Received]) -> list[Delivery]:
        """Deliveries for what the server delivered; a message past its queue's known
        ``delivery_limit`` (a retried copy, redelivered) is dead-lettered, not handed out."""
        spec = self.topology.known_spec(queue)
        limit = spec.delivery_limit if spec is not None else None
        deliveries = []
        for item, receipt in delivered:
            message, count = mapping.read(item)
            if limit is not None and count > limit:
                await settle(receipt, "reject")
                continue
            deliveries.append(Delivery(message, queue, count, receipt, None, next(_tags)))
        return deliveries

    async def close(self) -> None:
        readers, self.readers = list(self.readers.values()), {}
        for reader in readers:
            await reader.close()
        await self.publisher.close()
        await self.topology.close()


def _management(endpoint: Endpoint, options: RabbitMQOptions) -> Management | None:
    if not options.management:
        return None
    base = endpoint.management_base(options.management_url)
    parts = urlsplit(base)
    user, password = endpoint.user, endpoint.password
    if parts.username is not None:
        user, password = parts.username, parts.password or ""
        base = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    context = options.tls_context() if base.startswith("https") else None
    return Management(base, user, password, endpoint.vhost, options.management_timeout, context)


async def _close_quietly(connection: AbstractRobustConnection) -> None:
    try:
        await connection.close()
    except Exception:
        return


__all__ = ["RabbitMQBroker"]
