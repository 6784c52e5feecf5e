"""Queues: declaring, deleting, purging, listing, statistics, and publishing into them."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import Broker, Capability, Message, QueueSpec
from conveyor.errors import ConfigError, QueueNotFound, Unroutable
from tests.conformance.helpers import bodies, publish_bodies, receive_bodies

# declaring


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES)
async def test_declaring_a_queue_again_with_the_same_options_changes_nothing(
    broker: Broker, name: str
) -> None:
    spec = QueueSpec(name, lease_timeout=5)
    await broker.declare_queue(spec)
    await publish_bodies(broker, name, b"kept")

    await broker.declare_queue(QueueSpec(name, lease_timeout=5))

    assert [queue for queue in await broker.list_queues() if queue.name == name] == [spec]
    assert await receive_bodies(broker, name) == [b"kept"]


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES)
async def test_redeclaring_a_queue_with_other_options_raises_config_error(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name, lease_timeout=5))

    with pytest.raises(ConfigError):
        await broker.declare_queue(QueueSpec(name, lease_timeout=10))


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES)
async def test_failed_redeclare_leaves_the_queue_and_its_messages_as_they_were(
    broker: Broker, name: str
) -> None:
    spec = QueueSpec(name, lease_timeout=5)
    await broker.declare_queue(spec)
    await publish_bodies(broker, name, b"kept")

    with pytest.raises(ConfigError):
        await broker.declare_queue(QueueSpec(name))

    assert [queue for queue in await broker.list_queues() if queue.name == name] == [spec]
    assert await receive_bodies(broker, name) == [b"kept"]


# deleting and purging


@pytest.mark.needs(Capability.QUEUES)
async def test_delete_queue_returns_how_many_messages_went_including_leased(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a", b"b", b"c")
    assert await broker.get(name) is not None

    assert await broker.delete_queue(name) == 3


@pytest.mark.needs(Capability.QUEUES)
async def test_deleted_queue_is_gone(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a")

    await broker.delete_queue(name)

    assert f"{name}.missing" not in [queue.name for queue in await broker.list_queues()]
    with pytest.raises(QueueNotFound):
        await broker.queue_stats(name)
    with pytest.raises(QueueNotFound):
        await broker.receive(name)


@pytest.mark.needs(Capability.QUEUES)
async def test_queue_redeclared_after_delete_starts_empty(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"old")
    await broker.delete_queue(name)

    await broker.declare_queue(QueueSpec(name))

    assert (await broker.queue_stats(name)).at_least == 0
    assert await broker.get(name) is None


@pytest.mark.needs(Capability.QUEUES, Capability.DELAYS, Capability.EXACT_STATS)
async def test_purge_removes_ready_and_delayed_messages_but_not_leased_ones(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"leased", b"ready")
    await publish_bodies(broker, name, b"delayed", delay=30)
    leased = await broker.get(name)
    assert leased is not None

    assert await broker.purge_queue(name) == 2

    stats = await broker.queue_stats(name)
    assert (stats.ready, stats.delayed, stats.unacked) == (0, 0, 1)
    await broker.ack(leased)  # still held: the purge left it alone
    assert (await broker.queue_stats(name)).at_least == 0


@pytest.mark.needs(Capability.QUEUES)
async def test_purged_messages_are_not_delivered(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a", b"b")

    await broker.purge_queue(name)

    assert await broker.get(name) is None


# listing


@pytest.mark.needs(Capability.QUEUES, Capability.LEASES)
async def test_list_queues_returns_every_queue_with_its_options_sorted_by_name(
    broker: Broker, name: str
) -> None:
    specs = [
        QueueSpec(f"{name}.c"),
        QueueSpec(f"{name}.a", lease_timeout=7),
        QueueSpec(f"{name}.b", lease_timeout=3),
    ]
    for spec in specs:
        await broker.declare_queue(spec)

    listed = await broker.list_queues()

    assert [queue.name for queue in listed] == sorted(queue.name for queue in listed)
    assert [queue for queue in listed if queue.name.startswith(f"{name}.")] == sorted(
        specs, key=lambda spec: spec.name
    )


# statistics


@pytest.mark.needs(Capability.QUEUES, Capability.EXACT_STATS)
async def test_new_queue_stats_are_zero(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))

    stats = await broker.queue_stats(name)

    assert stats.queue == name
    assert (stats.ready, stats.delayed, stats.unacked, stats.depth) == (0, 0, 0, 0)
    assert (stats.published, stats.delivered, stats.acked, stats.dead_lettered) == (0, 0, 0, 0)
    assert stats.bytes == 0
    assert stats.oldest_age is None


@pytest.mark.needs(Capability.QUEUES, Capability.DELAYS, Capability.EXACT_STATS)
async def test_queue_stats_count_ready_delayed_and_unacked_messages(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"leased", b"ready-1", b"ready-2")
    await publish_bodies(broker, name, b"delayed", delay=30)
    assert await broker.get(name) is not None

    stats = await broker.queue_stats(name)

    assert (stats.ready, stats.delayed, stats.unacked) == (2, 1, 1)
    assert stats.depth == 4


@pytest.mark.needs(Capability.QUEUES, Capability.EXACT_STATS)
async def test_queue_stats_count_published_delivered_and_acked(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"a", b"b", b"c")
    first, _second = await broker.receive(name, max_messages=2)
    await broker.ack(first)

    stats = await broker.queue_stats(name)

    assert (stats.published, stats.delivered, stats.acked) == (3, 2, 1)
    assert (stats.ready, stats.unacked) == (1, 1)


@pytest.mark.needs(Capability.QUEUES, Capability.EXACT_STATS)
async def test_queue_stats_bytes_follow_the_bodies_held(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"abc", b"defgh")
    assert (await broker.queue_stats(name)).bytes == 8

    delivery = await broker.get(name)
    assert delivery is not None
    assert (await broker.queue_stats(name)).bytes == 8  # leased messages are still held
    await broker.ack(delivery)

    assert (await broker.queue_stats(name)).bytes == 5


@pytest.mark.needs(Capability.QUEUES, Capability.EXACT_STATS)
async def test_queue_stats_report_the_age_of_the_oldest_waiting_message(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    await publish_bodies(broker, name, b"old")
    await asyncio.sleep(0.3)
    await publish_bodies(broker, name, b"new")

    age = (await broker.queue_stats(name)).oldest_age

    assert age is not None
    assert 0.25 <= age < 5


# publishing


@pytest.mark.needs(Capability.QUEUES)
async def test_publish_returns_only_once_the_message_is_stored(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    message = Message(b"stored", routing_key=name)

    assert await broker.publish(message) == 1

    assert (await broker.queue_stats(name)).ready == 1
    delivery = await broker.get(name)
    assert delivery is not None
    assert delivery.message.id == message.id


@pytest.mark.needs(Capability.QUEUES)
async def test_received_message_keeps_what_was_published(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    message = Message(
        b"\x00payload\xff",
        routing_key=name,
        headers={"trace": "abc", "attempt": 1, "nested": {"ok": True, "list": [1, 2]}},
        content_type="application/octet-stream",
        timestamp=1_700_000_000.25,
    )
    await broker.publish(message)

    delivery = await broker.get(name)

    assert delivery is not None
    received = delivery.message
    assert received.body == message.body
    assert received.id == message.id
    assert received.routing_key == name
    assert received.headers == message.headers
    assert received.content_type == message.content_type
    assert received.timestamp == pytest.approx(message.timestamp, abs=0.001)
    assert delivery.queue == name
    assert delivery.delivery_count == 1
    assert not delivery.redelivered


@pytest.mark.needs(Capability.QUEUES)
async def test_publish_batch_delivers_messages_in_batch_order(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    payloads = [b"%02d" % i for i in range(20)]

    routed = await broker.publish_batch([Message(p, routing_key=name) for p in payloads])

    assert routed == [1] * 20
    assert await receive_bodies(broker, name) == payloads


@pytest.mark.needs(Capability.QUEUES, Capability.ATOMIC_BATCH_PUBLISH)
async def test_publish_batch_stores_nothing_when_one_message_is_unroutable(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    batch = [
        Message(b"a", routing_key=name),
        Message(b"lost", routing_key=f"{name}.missing"),
        Message(b"c", routing_key=name),
    ]

    with pytest.raises(Unroutable):
        await broker.publish_batch(batch, mandatory=True)

    stats = await broker.queue_stats(name)
    assert (stats.depth, stats.published) == (0, 0)
    assert await broker.get(name) is None


@pytest.mark.needs(Capability.QUEUES)
async def test_publish_batch_counts_queues_reached_per_message(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    batch = [
        Message(b"a", routing_key=name),
        Message(b"dropped", routing_key=f"{name}.missing"),
        Message(b"c", routing_key=name),
    ]

    assert await broker.publish_batch(batch) == [1, 0, 1]
    assert bodies(await broker.receive(name, max_messages=10)) == [b"a", b"c"]


@pytest.mark.needs(Capability.QUEUES)
async def test_publish_to_a_missing_queue_is_dropped(broker: Broker, name: str) -> None:
    assert await broker.publish(Message(b"x", routing_key=f"{name}.missing")) == 0


@pytest.mark.needs(Capability.QUEUES)
async def test_mandatory_publish_to_a_missing_queue_raises_unroutable(
    broker: Broker, name: str
) -> None:
    with pytest.raises(Unroutable):
        await broker.publish(Message(b"x", routing_key=f"{name}.missing"), mandatory=True)

    assert f"{name}.missing" not in [queue.name for queue in await broker.list_queues()]
