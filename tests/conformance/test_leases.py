"""Leases: lapse and redelivery, LeaseLost, extend_lease, waiting receives, the Consumer."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor import Broker, Capability, Delivery, Message, QueueSpec
from conveyor.errors import LeaseLost
from tests.conformance.helpers import Stopwatch, bodies, publish_bodies

LAPSE = 0.2  # lease_timeout for leases a test lets lapse
PAST_LAPSE = 0.35  # how long to sleep for such a lease to have lapsed


async def lapsed_delivery(broker: Broker, name: str) -> Delivery:
    """The delivery of a one-message queue, held until its lease lapsed."""
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a")
    delivery = await broker.get(name, lease_timeout=LAPSE)
    assert delivery is not None
    await asyncio.sleep(PAST_LAPSE)
    return delivery


async def lapsed_then_redelivered(broker: Broker, name: str) -> tuple[Delivery, Delivery]:
    """One message whose first lease lapsed and which a second receive now holds."""
    stale = await lapsed_delivery(broker, name)
    current = await broker.get(name, lease_timeout=10)
    assert current is not None
    return stale, current


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES)
async def test_lapsed_lease_returns_message_to_queue_as_redelivered(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    (message,) = await publish_bodies(broker, name, b"a")
    first = await broker.get(name, lease_timeout=LAPSE)
    assert first is not None
    assert await broker.get(name) is None

    await asyncio.sleep(PAST_LAPSE)

    again = await broker.get(name)
    assert again is not None
    assert again.message.id == message.id
    assert (again.delivery_count, again.redelivered) == (2, True)


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES)
async def test_queue_lease_timeout_is_the_default_lease(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name, lease_timeout=LAPSE))
    await publish_bodies(broker, name, b"a")
    first = await broker.get(name)
    assert first is not None
    assert first.lease_deadline is not None
    assert first.lease_deadline <= time.time() + LAPSE + 0.1

    await asyncio.sleep(PAST_LAPSE)

    again = await broker.get(name)
    assert again is not None
    assert again.delivery_count == 2


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES)
async def test_lapsed_lease_counts_as_ready_again_in_stats(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a")
    assert await broker.get(name, lease_timeout=LAPSE) is not None
    assert (await broker.queue_stats(name)).unacked == 1

    await asyncio.sleep(PAST_LAPSE)

    stats = await broker.queue_stats(name)
    assert (stats.ready, stats.unacked) == (1, 0)


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES)
async def test_acked_message_is_not_redelivered_after_its_lease_deadline(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a")
    delivery = await broker.get(name, lease_timeout=LAPSE)
    assert delivery is not None
    await broker.ack(delivery)

    await asyncio.sleep(PAST_LAPSE)

    assert await broker.get(name) is None


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES, Capability.FENCED_ACKS)
async def test_ack_with_a_lapsed_lease_raises_lease_lost(broker: Broker, name: str) -> None:
    delivery = await lapsed_delivery(broker, name)

    with pytest.raises(LeaseLost):
        await broker.ack(delivery)

    assert (await broker.queue_stats(name)).ready == 1  # it will be redelivered


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES, Capability.FENCED_ACKS)
async def test_nack_with_a_lapsed_lease_raises_lease_lost(broker: Broker, name: str) -> None:
    delivery = await lapsed_delivery(broker, name)

    with pytest.raises(LeaseLost):
        await broker.nack(delivery)


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES, Capability.FENCED_ACKS)
async def test_reject_with_a_lapsed_lease_raises_lease_lost_and_keeps_the_message(
    broker: Broker, name: str
) -> None:
    delivery = await lapsed_delivery(broker, name)

    with pytest.raises(LeaseLost):
        await broker.reject(delivery)

    assert (await broker.queue_stats(name)).ready == 1


@pytest.mark.needs(
    Capability.QUEUES, Capability.LEASES, Capability.LEASE_EXTENSION, Capability.FENCED_ACKS
)
async def test_extend_lease_with_a_lapsed_lease_raises_lease_lost(
    broker: Broker, name: str
) -> None:
    delivery = await lapsed_delivery(broker, name)

    with pytest.raises(LeaseLost):
        await broker.extend_lease(delivery, 5)


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES, Capability.FENCED_ACKS)
async def test_stale_ack_after_redelivery_raises_lease_lost_and_keeps_the_message(
    broker: Broker, name: str
) -> None:
    stale, current = await lapsed_then_redelivered(broker, name)

    with pytest.raises(LeaseLost):
        await broker.ack(stale)

    assert (await broker.queue_stats(name)).unacked == 1
    await broker.ack(current)  # the new holder's lease is intact
    assert (await broker.queue_stats(name)).at_least == 0


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES, Capability.FENCED_ACKS)
async def test_stale_nack_after_redelivery_raises_lease_lost_and_leaves_the_new_lease(
    broker: Broker, name: str
) -> None:
    stale, current = await lapsed_then_redelivered(broker, name)

    with pytest.raises(LeaseLost):
        await broker.nack(stale)

    assert await broker.get(name) is None  # not requeued behind the new holder's back
    await broker.ack(current)


@pytest.mark.needs(
    Capability.QUEUES, Capability.LEASES, Capability.LEASE_EXTENSION, Capability.FENCED_ACKS
)
async def test_stale_extend_after_redelivery_raises_lease_lost_and_leaves_the_new_lease(
    broker: Broker, name: str
) -> None:
    stale, current = await lapsed_then_redelivered(broker, name)

    with pytest.raises(LeaseLost):
        await broker.extend_lease(stale, 30)

    await broker.ack(current)
    assert (await broker.queue_stats(name)).at_least == 0


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES, Capability.FENCED_ACKS)
async def test_ack_many_acks_live_leases_then_raises_lease_lost_for_lapsed_ones(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"lapsed", b"live")
    lapsed = await broker.get(name, lease_timeout=LAPSE)
    live = await broker.get(name, lease_timeout=10)
    assert lapsed is not None
    assert live is not None
    await asyncio.sleep(PAST_LAPSE)

    with pytest.raises(LeaseLost):
        await broker.ack_many([lapsed, live])

    stats = await broker.queue_stats(name)
    assert (stats.depth, stats.acked) == (1, 1)
    assert bodies(await broker.receive(name, max_messages=10)) == [b"lapsed"]


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES, Capability.LEASE_EXTENSION)
async def test_extend_lease_keeps_the_message_away_past_the_original_deadline(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a")
    delivery = await broker.get(name, lease_timeout=0.3)
    assert delivery is not None

    extended = await broker.extend_lease(delivery, 2)
    assert extended.lease_deadline is not None
    assert delivery.lease_deadline is not None
    assert extended.lease_deadline >= delivery.lease_deadline + 1
    await asyncio.sleep(0.5)

    assert await broker.get(name) is None
    await broker.ack(extended)
    assert (await broker.queue_stats(name)).at_least == 0


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES)
async def test_delivery_count_grows_each_time_the_message_is_leased(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a")

    counts = []
    for _ in range(3):
        delivery = await broker.get(name, lease_timeout=LAPSE)
        assert delivery is not None
        counts.append(delivery.delivery_count)
        await asyncio.sleep(PAST_LAPSE)

    assert counts == [1, 2, 3]


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES)
async def test_waiting_receive_wakes_promptly_when_a_message_is_published(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))

    async def publish_soon() -> None:
        await asyncio.sleep(0.2)
        await broker.publish(Message(b"late", routing_key=name))

    publisher = asyncio.create_task(publish_soon())
    clock = Stopwatch()
    deliveries = await broker.receive(name, wait=5)
    elapsed = clock.elapsed
    await publisher

    assert bodies(deliveries) == [b"late"]
    assert elapsed < 0.8


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES)
async def test_waiting_receive_wakes_when_a_lease_lapses(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a")
    assert await broker.get(name, lease_timeout=0.3) is not None
    clock = Stopwatch()

    (again,) = await broker.receive(name, wait=3)

    assert 0.2 <= clock.elapsed < 1.5
    assert again.delivery_count == 2


@pytest.mark.needs(Capability.QUEUES)
async def test_waiting_receive_returns_nothing_after_the_wait(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    clock = Stopwatch()

    assert await broker.receive(name, wait=0.3) == []

    assert 0.25 <= clock.elapsed < 1.5


# the Consumer


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES)
async def test_consumer_yields_every_message_in_order(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    payloads = [b"%02d" % i for i in range(10)]
    await publish_bodies(broker, name, *payloads)
    consumer = broker.consume(name, prefetch=3, lease_timeout=5)

    received = []
    async for delivery in consumer:
        received.append(delivery.message.body)
        await consumer.ack(delivery)
        if len(received) == len(payloads):
            break

    assert received == payloads
    assert (await broker.queue_stats(name)).at_least == 0


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES)
async def test_consumer_never_holds_more_than_prefetch_unsettled(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, *[b"%02d" % i for i in range(10)])
    consumer = broker.consume(name, prefetch=3, lease_timeout=10)
    held = [await anext(consumer) for _ in range(3)]
    stats = await broker.queue_stats(name)
    assert (stats.unacked, stats.ready) == (3, 7)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(consumer), 0.5)
    assert (await broker.queue_stats(name)).unacked == 3

    await consumer.ack(held[0])
    fourth = await asyncio.wait_for(anext(consumer), 2)
    assert fourth.message.body == b"03"
    assert (await broker.queue_stats(name)).unacked == 3


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES)
async def test_consumer_stops_counting_a_delivery_whose_lease_lapsed(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a", b"b")
    consumer = broker.consume(name, prefetch=1, lease_timeout=0.3)
    first = await anext(consumer)
    clock = Stopwatch()

    second = await asyncio.wait_for(anext(consumer), 2)

    assert clock.elapsed >= 0.2  # it waited for the lapse: prefetch was full until then
    assert first.message.body == b"a"
    assert second.message.body in (b"a", b"b")


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES, Capability.UNCOUNTED_RELEASE)
async def test_released_messages_come_back_at_once_without_counting_a_delivery(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a", b"b")
    deliveries = await broker.receive(name, max_messages=2, lease_timeout=30)
    await broker.release(deliveries)
    again = await broker.receive(name, max_messages=2)
    assert [d.message.body for d in again] == [b"a", b"b"]
    assert [d.delivery_count for d in again] == [1, 1]
    assert not any(d.redelivered for d in again)
    await broker.release(deliveries)  # stale leases: nothing happens
    assert (await broker.queue_stats(name)).unacked == 2


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES, Capability.UNCOUNTED_RELEASE)
async def test_a_consumer_releases_uncounted_and_frees_its_prefetch(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a")
    consumer = broker.consume(name, prefetch=1, lease_timeout=30)
    first = await anext(consumer)
    await consumer.release([first])
    again = await asyncio.wait_for(anext(consumer), 2)  # the slot is free at once
    assert again.message.body == b"a"
    assert again.delivery_count == 1
    await consumer.ack(again)
