"""Declaring on RabbitMQ: refused redeclares, quorum delivery limits, listings and stats.

Against the real server; every name carries a token of the test's own, and everything
with it is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from conveyor import Broker, ExchangeSpec, ExchangeType, Message, Overflow, QueueSpec, open_broker
from conveyor.brokers.rabbitmq.arguments import queue_arguments
from conveyor.brokers.rabbitmq.options import QueueType
from conveyor.errors import BrokerUnavailable, ConfigError, QueueNotFound
from tests.backend_urls import (
    RABBITMQ_URL,
)


@pytest.fixture
async def broker(token: str) -> AsyncIterator[Broker]:
    async with open_broker(RABBITMQ_URL) as instance:
        yield instance


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# refused redeclares


async def test_redeclaring_with_another_argument_names_it_and_the_broker_carries_on(
    broker: Broker, token: str
) -> None:
    queue = f"{token}.q"
    await broker.declare_queue(QueueSpec(queue, max_length=5))

    with pytest.raises(ConfigError) as raised:
        await broker.declare_queue(QueueSpec(queue, max_length=10))

    text = str(raised.value)
    assert "max_length" in text
    assert "x-max-length" in text
    assert "5" in text
    assert "10" in text
    await broker.declare_queue(QueueSpec(queue, max_length=5))
    assert await broker.publish(Message(b"still works", routing_key=queue)) == 1
    delivery = await broker.get(queue)
    assert delivery is not None
    assert delivery.message.body == b"still works"
    await broker.ack(delivery)


async def test_a_classic_queue_redeclared_with_a_delivery_limit_names_the_queue_type(
    broker: Broker, token: str
) -> None:
    queue = f"{token}.q"
    await broker.declare_queue(QueueSpec(queue))

    with pytest.raises(ConfigError, match="x-queue-type"):
        await broker.declare_queue(QueueSpec(queue, delivery_limit=3))

    await broker.ping()


async def test_an_exchange_redeclared_with_another_type_names_the_type(
    broker: Broker, token: str
) -> None:
    exchange = f"{token}.x"
    await broker.declare_exchange(ExchangeSpec(exchange, ExchangeType.DIRECT))

    with pytest.raises(ConfigError, match="another type"):
        await broker.declare_exchange(ExchangeSpec(exchange, ExchangeType.FANOUT))

    await broker.declare_exchange(ExchangeSpec(exchange, ExchangeType.DIRECT))


async def test_missing_queues_are_queue_not_found_and_leave_the_broker_usable(
    broker: Broker, token: str
) -> None:
    for attempt in (broker.queue_stats, broker.receive, broker.purge_queue, broker.delete_queue):
        with pytest.raises(QueueNotFound):
            await attempt(f"{token}.missing")
    with pytest.raises(QueueNotFound):
        await broker.receive(f"{token}.missing", wait=0.5)
    await broker.ping()


def test_only_options_that_differ_from_rabbitmqs_defaults_become_arguments() -> None:
    assert queue_arguments(QueueSpec("q"), QueueType.CLASSIC) == {}
    assert queue_arguments(
        QueueSpec(
            "q",
            max_priority=4,
            message_ttl=1.5,
            expires=60,
            max_length=10,
            max_bytes=1000,
            overflow=Overflow.REJECT_PUBLISH,
            dead_letter_exchange="",
            dead_letter_routing_key="q.dlq",
        ),
        QueueType.CLASSIC,
    ) == {
        "x-max-priority": 4,
        "x-message-ttl": 1500,
        "x-expires": 60000,
        "x-max-length": 10,
        "x-max-length-bytes": 1000,
        "x-overflow": "reject-publish",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "q.dlq",
    }
    assert queue_arguments(QueueSpec("q", delivery_limit=3), QueueType.CLASSIC) == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 2,
    }


# quorum queues and delivery limits


async def test_a_quorum_queue_cannot_have_priorities(broker: Broker, token: str) -> None:
    with pytest.raises(ConfigError, match="quorum"):
        await broker.declare_queue(QueueSpec(f"{token}.q", delivery_limit=2, max_priority=5))

    async with open_broker(f"{RABBITMQ_URL}?queue_type=quorum") as quorum:
        with pytest.raises(ConfigError, match="priorities"):
            await quorum.declare_queue(QueueSpec(f"{token}.q", max_priority=5))


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_delivery_limit_n_dead_letters_instead_of_the_next_delivery(
    broker: Broker, token: str, limit: int
) -> None:
    queue, dlq = f"{token}.q", f"{token}.dlq"
    await broker.declare_queue(QueueSpec(dlq))
    await broker.declare_queue(
        QueueSpec(queue, dead_letter_exchange="", dead_letter_routing_key=dlq, delivery_limit=limit)
    )
    message = Message(b"poison", routing_key=queue)
    await broker.publish(message)

    counts: list[int] = []
    while len(counts) <= limit:
        deliveries = await broker.receive(queue, wait=2)
        if not deliveries:
            break
        counts.append(deliveries[0].delivery_count)
        await broker.nack(deliveries[0])

    assert counts == list(range(1, limit + 1))
    (dead,) = await broker.receive(dlq, wait=5)
    assert dead.message.id == message.id
    assert [(d["queue"], d["reason"]) for d in dead.message.headers["x-death"]] == [
        (queue, "delivery_limit")
    ]
    assert dead.delivery_count == 1


async def test_delayed_retries_count_towards_the_delivery_limit(broker: Broker, token: str) -> None:
    queue, dlq = f"{token}.q", f"{token}.dlq"
    await broker.declare_queue(QueueSpec(dlq))
    await broker.declare_queue(
        QueueSpec(queue, dead_letter_exchange="", dead_letter_routing_key=dlq, delivery_limit=3)
    )
    await broker.publish(Message(b"flaky", routing_key=queue))

    counts = []
    for _ in range(3):
        (delivery,) = await broker.receive(queue, wait=5)
        counts.append(delivery.delivery_count)
        await broker.nack(delivery, delay=0.1)

    assert counts == [1, 2, 3]
    (dead,) = await broker.receive(dlq, wait=5)
    assert dead.message.body == b"flaky"
    assert await broker.get(queue) is None


# listings and deletes


async def test_listings_show_declared_queues_and_exchanges_not_delay_queues(
    broker: Broker, token: str
) -> None:
    spec = QueueSpec(f"{token}.q", max_length=7, message_ttl=2.5, delivery_limit=4)
    await broker.declare_queue(spec)
    await broker.declare_exchange(ExchangeSpec(f"{token}.x", ExchangeType.TOPIC))
    await broker.publish(Message(b"later", routing_key=spec.name), delay=30)

    queues = [q for q in await broker.list_queues() if token in q.name]
    exchanges = [x for x in await broker.list_exchanges() if token in x.name]

    assert queues == [QueueSpec(spec.name, max_length=7, message_ttl=2.5, delivery_limit=4)]
    assert exchanges == [ExchangeSpec(f"{token}.x", ExchangeType.TOPIC)]
    assert all(not x.name.startswith("amq.") for x in await broker.list_exchanges())


async def test_delete_and_purge_count_ready_and_delayed_messages(
    broker: Broker, token: str
) -> None:
    queue = f"{token}.q"
    await broker.declare_queue(QueueSpec(queue))
    await broker.publish_batch([Message(b"a", routing_key=queue), Message(b"b", routing_key=queue)])
    await broker.publish(Message(b"later", routing_key=queue), delay=30)

    assert await broker.purge_queue(queue) == 3
    await broker.publish(Message(b"c", routing_key=queue))
    await broker.publish(Message(b"later", routing_key=queue), delay=30)
    assert await broker.delete_queue(queue) == 2

    assert f"{token}" not in " ".join(q.name for q in await broker.list_queues())


# statistics


async def test_management_figures_arrive_once_rabbitmq_has_sampled_them(
    broker: Broker, token: str
) -> None:
    queue = f"{token}.q"
    await broker.declare_queue(QueueSpec(queue))
    await broker.publish_batch([Message(b"abc", routing_key=queue) for _ in range(3)])
    held = await broker.receive(queue, max_messages=2)
    await broker.ack(held[0])

    stats = await broker.queue_stats(queue)
    # RabbitMQ samples every collect_statistics_interval (5 s), message counts and bytes
    # from the queue and acks from the channel, so one figure can arrive a sample later.
    for _ in range(150):
        if (stats.unacked, stats.acked, stats.bytes) == (1, 1, 6):
            break
        await asyncio.sleep(0.1)
        stats = await broker.queue_stats(queue)

    assert (stats.ready, stats.delayed, stats.unacked) == (1, 0, 1)
    assert (stats.published, stats.delivered, stats.acked) == (3, 2, 1)
    assert stats.bytes == 6
    assert stats.dead_lettered is None  # RabbitMQ 3.10 does not count it per queue
    await broker.ack(held[1])


async def test_without_the_management_api_its_figures_are_unknown_not_zero(
    token: str,
) -> None:
    url = f"{RABBITMQ_URL}?management_url=http://127.0.0.1:{closed_port()}"
    async with open_broker(url) as broker:
        queue = f"{token}.q"
        await broker.declare_queue(QueueSpec(queue))
        await broker.publish(Message(b"abc", routing_key=queue))

        stats = await broker.queue_stats(queue)

        assert stats.ready == 1
        unknown = [stats.delayed, stats.unacked, stats.bytes, stats.published, stats.acked]
        assert unknown == [None] * 5  # QueueStats fields are typed int until they may be None
        exchange = await broker.exchange_stats("")
        assert exchange.bindings == ()
        assert [exchange.unroutable] == [None]
        with pytest.raises(BrokerUnavailable, match="management API"):
            await broker.list_queues()


async def test_management_can_be_turned_off(token: str) -> None:
    async with open_broker(f"{RABBITMQ_URL}?management=false") as broker:
        await broker.declare_queue(QueueSpec(f"{token}.q"))
        assert (await broker.queue_stats(f"{token}.q")).unacked is None
        with pytest.raises(BrokerUnavailable, match="management=false"):
            await broker.list_exchanges()


async def test_reserved_delay_names_are_refused(broker: Broker) -> None:
    with pytest.raises(ConfigError, match="reserved"):
        await broker.declare_queue(QueueSpec("conveyor.delay.100.queue.mine"))
    with pytest.raises(ConfigError, match="reserved"):
        await broker.declare_exchange(ExchangeSpec("conveyor.delay", ExchangeType.HEADERS))
