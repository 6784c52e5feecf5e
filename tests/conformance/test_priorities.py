"""Priority queues: higher priority first, FIFO within a priority, clamping to max_priority."""

from __future__ import annotations

import pytest

from conveyor import Broker, Capability, Message, QueueSpec
from tests.conformance.helpers import receive_bodies


async def publish_with_priorities(broker: Broker, queue: str, *items: tuple[bytes, int]) -> None:
    for body, priority in items:
        assert await broker.publish(Message(body, routing_key=queue, priority=priority)) == 1


@pytest.mark.needs(Capability.QUEUES, Capability.PRIORITIES)
async def test_higher_priority_is_delivered_first(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name, max_priority=10))
    await publish_with_priorities(broker, name, (b"p1", 1), (b"p9", 9), (b"p0", 0), (b"p5", 5))

    assert await receive_bodies(broker, name) == [b"p9", b"p5", b"p1", b"p0"]


@pytest.mark.needs(Capability.QUEUES, Capability.PRIORITIES)
async def test_higher_priority_is_delivered_first_one_receive_at_a_time(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name, max_priority=10))
    await publish_with_priorities(broker, name, (b"low", 1), (b"high", 8), (b"mid", 4))

    received = []
    for _ in range(3):
        delivery = await broker.get(name)
        assert delivery is not None
        received.append(delivery.message.body)

    assert received == [b"high", b"mid", b"low"]


@pytest.mark.needs(Capability.QUEUES, Capability.PRIORITIES)
async def test_messages_of_equal_priority_are_delivered_first_in_first_out(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name, max_priority=10))
    await publish_with_priorities(
        broker, name, (b"a3", 3), (b"b7", 7), (b"c3", 3), (b"d7", 7), (b"e3", 3), (b"f7", 7)
    )

    assert await receive_bodies(broker, name) == [b"b7", b"d7", b"f7", b"a3", b"c3", b"e3"]


@pytest.mark.needs(Capability.QUEUES, Capability.PRIORITIES)
async def test_priority_above_max_priority_counts_as_max_priority(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name, max_priority=5))
    await publish_with_priorities(broker, name, (b"at-max", 5), (b"above", 200), (b"below", 4))

    # "above" ranks with "at-max", so FIFO between them; it does not overtake it.
    assert await receive_bodies(broker, name) == [b"at-max", b"above", b"below"]


@pytest.mark.needs(Capability.QUEUES)
async def test_queue_without_max_priority_ignores_priority(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_with_priorities(broker, name, (b"p0", 0), (b"p9", 9), (b"p5", 5), (b"p255", 255))

    assert await receive_bodies(broker, name) == [b"p0", b"p9", b"p5", b"p255"]


@pytest.mark.needs(Capability.QUEUES, Capability.PRIORITIES)
async def test_requeued_high_priority_message_is_delivered_before_lower_ones(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name, max_priority=10))
    await publish_with_priorities(broker, name, (b"high", 9), (b"low", 1))
    high = await broker.get(name)
    assert high is not None
    assert high.message.body == b"high"

    await broker.nack(high)

    assert await receive_bodies(broker, name) == [b"high", b"low"]


@pytest.mark.needs(Capability.QUEUES)
async def test_priority_is_handed_back_as_published_on_a_queue_without_priorities(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    await broker.publish(Message(b"x", routing_key=name, priority=7))
    (delivery,) = await broker.receive(name)
    assert delivery.message.priority == 7
