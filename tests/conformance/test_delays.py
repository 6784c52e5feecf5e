"""Delayed publishing: held back until the delay ends, counted as delayed, waking receivers."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import Broker, Capability, Message, QueueSpec
from tests.conformance.helpers import Stopwatch, bodies, publish_bodies, receive_bodies


@pytest.mark.needs(Capability.QUEUES, Capability.DELAYS)
async def test_delayed_message_is_not_delivered_before_its_delay(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"later", delay=0.5)

    assert await broker.get(name) is None
    await asyncio.sleep(0.2)
    assert await broker.get(name) is None


@pytest.mark.needs(Capability.QUEUES, Capability.DELAYS)
async def test_delayed_message_is_delivered_after_its_delay(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    (message,) = await publish_bodies(broker, name, b"later", delay=0.3)

    await asyncio.sleep(0.4)

    delivery = await broker.get(name)
    assert delivery is not None
    assert delivery.message.id == message.id
    assert delivery.delivery_count == 1


@pytest.mark.needs(Capability.QUEUES, Capability.DELAYS, Capability.EXACT_STATS)
async def test_delayed_message_counts_as_delayed_until_its_delay_ends(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"later", delay=0.3)

    stats = await broker.queue_stats(name)
    assert (stats.ready, stats.delayed, stats.unacked) == (0, 1, 0)
    await asyncio.sleep(0.4)
    stats = await broker.queue_stats(name)
    assert (stats.ready, stats.delayed, stats.unacked) == (1, 0, 0)


@pytest.mark.needs(Capability.QUEUES, Capability.DELAYS)
async def test_waiting_receive_wakes_when_the_delay_ends(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"later", delay=0.4)
    clock = Stopwatch()

    deliveries = await broker.receive(name, wait=3)

    assert bodies(deliveries) == [b"later"]
    assert 0.3 <= clock.elapsed < 1.0


@pytest.mark.needs(Capability.QUEUES, Capability.DELAYS)
async def test_delayed_message_does_not_hold_back_later_ready_messages(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"later", delay=30)
    await publish_bodies(broker, name, b"now")

    assert await receive_bodies(broker, name) == [b"now"]


@pytest.mark.needs(Capability.QUEUES, Capability.DELAYS)
async def test_batch_delay_holds_back_every_message_of_the_batch(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    batch = [Message(b"a", routing_key=name), Message(b"b", routing_key=name)]

    assert await broker.publish_batch(batch, delay=0.3) == [1, 1]

    assert await broker.get(name) is None
    assert (await broker.queue_stats(name)).delayed == 2
    await asyncio.sleep(0.4)
    assert await receive_bodies(broker, name) == [b"a", b"b"]
