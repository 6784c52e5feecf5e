"""Settling deliveries: ack, ack_many, nack (requeue, delay) and reject; delivery order."""

from __future__ import annotations

import pytest

from conveyor import Broker, Capability, Message, QueueSpec
from tests.conformance.helpers import Stopwatch, bodies, publish_bodies


@pytest.mark.needs(Capability.QUEUES)
async def test_ack_removes_the_message(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a")
    delivery = await broker.get(name)
    assert delivery is not None

    await broker.ack(delivery)

    stats = await broker.queue_stats(name)
    assert stats.ready == 0
    if Capability.EXACT_STATS in broker.capabilities:
        assert (stats.depth, stats.acked) == (0, 1)
    assert await broker.get(name) is None


@pytest.mark.needs(Capability.QUEUES)
async def test_ack_many_removes_every_message_in_one_step(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a", b"b", b"c", b"left")
    deliveries = await broker.receive(name, max_messages=3)
    assert len(deliveries) == 3

    await broker.ack_many(deliveries)

    stats = await broker.queue_stats(name)
    assert stats.ready == 1
    if Capability.EXACT_STATS in broker.capabilities:
        assert (stats.depth, stats.unacked, stats.acked) == (1, 0, 3)
    assert bodies(await broker.receive(name, max_messages=10)) == [b"left"]


@pytest.mark.needs(Capability.QUEUES, Capability.EXACT_STATS)
async def test_ack_only_removes_the_acked_message(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a", b"b")
    first, second = await broker.receive(name, max_messages=2)

    await broker.ack(first)

    assert (await broker.queue_stats(name)).unacked == 1
    await broker.ack(second)  # its lease is untouched
    assert (await broker.queue_stats(name)).at_least == 0


@pytest.mark.needs(Capability.QUEUES)
async def test_nack_with_requeue_makes_the_message_ready_again_as_redelivered(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    (message,) = await publish_bodies(broker, name, b"a")
    first = await broker.get(name)
    assert first is not None
    assert (first.delivery_count, first.redelivered) == (1, False)

    await broker.nack(first)

    assert (await broker.queue_stats(name)).ready == 1
    again = await broker.get(name)
    assert again is not None
    assert again.message.id == message.id
    assert again.message.body == b"a"
    assert (again.delivery_count, again.redelivered) == (2, True)


@pytest.mark.needs(Capability.QUEUES, Capability.DELAYS, Capability.EXACT_STATS)
async def test_nack_with_delay_holds_the_message_back_for_the_delay(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a")
    first = await broker.get(name)
    assert first is not None

    await broker.nack(first, delay=0.4)
    clock = Stopwatch()

    assert await broker.get(name) is None
    stats = await broker.queue_stats(name)
    assert (stats.ready, stats.delayed, stats.unacked) == (0, 1, 0)
    (again,) = await broker.receive(name, wait=2)
    assert clock.elapsed >= 0.3
    assert (again.message.body, again.delivery_count) == (b"a", 2)


@pytest.mark.needs(Capability.QUEUES)
async def test_reject_without_a_dead_letter_exchange_drops_the_message(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a")
    delivery = await broker.get(name)
    assert delivery is not None

    await broker.reject(delivery)

    assert (await broker.queue_stats(name)).at_least == 0
    assert await broker.get(name) is None


@pytest.mark.needs(Capability.QUEUES)
async def test_nack_without_requeue_drops_the_message_like_reject(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a")
    delivery = await broker.get(name)
    assert delivery is not None

    await broker.nack(delivery, requeue=False)

    assert (await broker.queue_stats(name)).at_least == 0


@pytest.mark.needs(Capability.QUEUES)
async def test_get_returns_none_on_an_empty_queue(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))

    assert await broker.get(name) is None
    assert await broker.receive(name, max_messages=10) == []


@pytest.mark.needs(Capability.QUEUES, Capability.EXACT_STATS)
async def test_receive_leases_at_most_max_messages(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a", b"b", b"c", b"d", b"e")

    deliveries = await broker.receive(name, max_messages=3)

    assert bodies(deliveries) == [b"a", b"b", b"c"]
    stats = await broker.queue_stats(name)
    assert (stats.ready, stats.unacked) == (2, 3)


@pytest.mark.needs(Capability.QUEUES)
async def test_leased_message_is_not_delivered_twice(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a")
    assert await broker.get(name) is not None

    assert await broker.get(name) is None


@pytest.mark.needs(Capability.QUEUES)
async def test_messages_of_one_priority_are_delivered_first_in_first_out(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    payloads = [b"%03d" % i for i in range(100)]
    for payload in payloads:
        await broker.publish(Message(payload, routing_key=name))

    received: list[bytes] = []
    while len(received) < 100:
        deliveries = await broker.receive(name, max_messages=7)
        assert deliveries, f"queue ran dry after {len(received)} messages"
        await broker.ack_many(deliveries)
        received.extend(bodies(deliveries))

    assert received == payloads
