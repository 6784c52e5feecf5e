"""Delays on RabbitMQ without a plugin: per-delay TTL queues that dead-letter back.

Against the real server; every name carries a token of the test's own, and everything
with it (delay queues included) is deleted afterwards.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from conveyor import Binding, Broker, ExchangeSpec, ExchangeType, Message, QueueSpec, open_broker
from conveyor.brokers.rabbitmq.delays import DelayRoute, bucket_ms
from conveyor.errors import ConfigError, Unroutable
from tests.backend_urls import (
    RABBITMQ_URL,
)


@pytest.fixture
async def broker(token: str) -> AsyncIterator[Broker]:
    async with open_broker(RABBITMQ_URL) as instance:
        yield instance


@pytest.mark.parametrize(
    ("delay", "ms"),
    [(0.0004, 1), (0.3, 300), (0.037, 37), (1.234, 1300), (1.3, 1300), (99.01, 100_000)],
)
def test_delays_round_up_to_two_significant_digits(delay: float, ms: int) -> None:
    assert bucket_ms(delay) == ms


def test_delay_queue_names_stay_within_the_name_limit() -> None:
    route = DelayRoute.to_queue(1.0, "q" * 255)
    assert len(route.queue) <= 255
    assert route.arguments["x-dead-letter-routing-key"] == "q" * 255


async def test_a_delayed_message_arrives_after_its_delay_not_before(
    broker: Broker, token: str
) -> None:
    queue = f"{token}.q"
    await broker.declare_queue(QueueSpec(queue))
    message = Message(b"later", routing_key=queue, headers={"k": "v"})
    started = time.monotonic()

    assert await broker.publish(message, delay=0.5) == 1
    assert await broker.get(queue) is None
    (delivery,) = await broker.receive(queue, wait=10)

    assert time.monotonic() - started >= 0.5
    assert delivery.message.id == message.id
    assert delivery.message.headers == {"k": "v"}
    assert delivery.message.routing_key == queue
    assert delivery.delivery_count == 1


async def test_delayed_messages_come_out_in_the_order_their_delays_end(
    broker: Broker, token: str
) -> None:
    queue = f"{token}.q"
    await broker.declare_queue(QueueSpec(queue))
    for body, delay in ((b"third", 0.9), (b"first", 0.3), (b"second", 0.6)):
        await broker.publish(Message(body, routing_key=queue), delay=delay)

    received: list[bytes] = []
    while len(received) < 3:
        deliveries = await broker.receive(queue, max_messages=3, wait=10)
        assert deliveries, "a delayed message never arrived"
        received += [d.message.body for d in deliveries]
        await broker.ack_many(deliveries)

    assert received == [b"first", b"second", b"third"]


async def test_nack_with_delay_brings_the_message_back_counted_and_unchanged(
    broker: Broker, token: str
) -> None:
    exchange, queue = f"{token}.x", f"{token}.q"
    await broker.declare_exchange(ExchangeSpec(exchange, ExchangeType.TOPIC))
    await broker.declare_queue(QueueSpec(queue))
    await broker.bind(Binding(exchange, queue, "orders.*"))
    message = Message(b"job", routing_key="orders.created", headers={"attempt": "x"})
    await broker.publish(message, exchange=exchange)

    counts = []
    for _ in range(3):
        (delivery,) = await broker.receive(queue, wait=10)
        counts.append(delivery.delivery_count)
        assert delivery.message.id == message.id
        assert delivery.message.routing_key == "orders.created"
        assert delivery.message.headers == {"attempt": "x"}
        started = time.monotonic()
        await broker.nack(delivery, delay=0.3)
        assert await broker.get(queue) is None
    (last,) = await broker.receive(queue, wait=10)

    assert time.monotonic() - started >= 0.3
    assert counts == [1, 2, 3]
    assert last.delivery_count == 4
    await broker.ack(last)


async def test_a_delay_through_a_named_exchange_is_routed_when_it_ends(
    broker: Broker, token: str
) -> None:
    exchange, queue = f"{token}.x", f"{token}.q"
    await broker.declare_exchange(ExchangeSpec(exchange, ExchangeType.TOPIC))
    await broker.declare_queue(QueueSpec(queue))
    await broker.bind(Binding(exchange, queue, "audit.#"))

    assert (
        await broker.publish(
            Message(b"late", routing_key="audit.login"), exchange=exchange, delay=0.3
        )
        == 1
    )
    (delivery,) = await broker.receive(queue, wait=10)

    assert delivery.message.routing_key == "audit.login"
    assert "x-death" not in delivery.message.headers


async def test_a_delayed_message_that_is_dead_lettered_later_has_only_real_deaths(
    broker: Broker, token: str
) -> None:
    queue, dlq = f"{token}.q", f"{token}.dlq"
    await broker.declare_queue(QueueSpec(dlq))
    await broker.declare_queue(
        QueueSpec(queue, dead_letter_exchange="", dead_letter_routing_key=dlq)
    )
    await broker.publish(Message(b"x", routing_key=queue), delay=0.2)
    (delivery,) = await broker.receive(queue, wait=10)
    await broker.nack(delivery, delay=0.2)
    (again,) = await broker.receive(queue, wait=10)

    await broker.reject(again)
    (dead,) = await broker.receive(dlq, wait=10)

    assert [(d["queue"], d["reason"]) for d in dead.message.headers["x-death"]] == [
        (queue, "rejected")
    ]
    assert dead.message.headers["x-first-death-queue"] == queue
    assert dead.delivery_count == 1


async def test_delays_refuse_what_they_cannot_honour(broker: Broker, token: str) -> None:
    queue, exchange = f"{token}.q", f"{token}.x"
    await broker.declare_queue(QueueSpec(queue))
    await broker.declare_exchange(ExchangeSpec(exchange, ExchangeType.FANOUT))

    with pytest.raises(ConfigError, match="ttl"):
        await broker.publish(Message(b"x", routing_key=queue, ttl=5), delay=1)
    with pytest.raises(ConfigError, match="mandatory"):
        await broker.publish(Message(b"x"), exchange=exchange, mandatory=True, delay=1)
    with pytest.raises(Unroutable):
        await broker.publish_batch(
            [Message(b"a", routing_key=queue), Message(b"b", routing_key=f"{token}.missing")],
            mandatory=True,
            delay=0.2,
        )

    assert await broker.publish(Message(b"x", routing_key=f"{token}.missing"), delay=1) == 0
    assert await broker.get(queue) is None
    assert await broker.receive(queue, wait=0.6) == []  # the refused batch stored nothing
