"""Message TTL, queue expiry, and queue limits (max_length, max_bytes, overflow)."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import Broker, Capability, Message, Overflow, QueueSpec
from conveyor.errors import QueueFull
from tests.conformance.helpers import deaths, publish_bodies, receive_bodies


async def declare_with_dead_letter_queue(broker: Broker, spec: QueueSpec) -> str:
    """Declare ``spec`` (which must dead-letter to "" / "<name>.dlq") and its dead-letter queue."""
    dlq = f"{spec.name}.dlq"
    assert (spec.dead_letter_exchange, spec.dead_letter_routing_key) == ("", dlq)
    await broker.declare_queue(QueueSpec(dlq))
    await broker.declare_queue(spec)
    return dlq


# message TTL


@pytest.mark.needs(Capability.QUEUES, Capability.TTL)
async def test_message_past_its_own_ttl_is_not_delivered(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    await broker.publish(Message(b"short-lived", routing_key=name, ttl=0.2))

    await asyncio.sleep(0.35)

    assert await broker.get(name) is None
    assert (await broker.queue_stats(name)).at_least == 0


@pytest.mark.needs(Capability.QUEUES, Capability.TTL)
async def test_message_within_its_ttl_is_delivered(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    await broker.publish(Message(b"fresh", routing_key=name, ttl=5))

    assert await receive_bodies(broker, name) == [b"fresh"]


@pytest.mark.needs(Capability.QUEUES, Capability.TTL)
async def test_message_past_the_queue_message_ttl_is_not_delivered(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name, message_ttl=0.2))
    await publish_bodies(broker, name, b"short-lived")

    await asyncio.sleep(0.35)

    assert await broker.get(name) is None
    assert (await broker.queue_stats(name)).at_least == 0


@pytest.mark.needs(Capability.QUEUES, Capability.TTL)
async def test_shorter_of_message_ttl_and_queue_message_ttl_applies(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name, message_ttl=0.2))
    await broker.publish(Message(b"asks-for-long", routing_key=name, ttl=60))
    await broker.declare_queue(QueueSpec(f"{name}.long", message_ttl=60))
    await broker.publish(Message(b"own-short", routing_key=f"{name}.long", ttl=0.2))

    await asyncio.sleep(0.35)

    assert await broker.get(name) is None
    assert await broker.get(f"{name}.long") is None


@pytest.mark.needs(Capability.QUEUES, Capability.TTL, Capability.DEAD_LETTER)
async def test_expired_message_is_dead_lettered_with_reason_expired(
    broker: Broker, name: str
) -> None:
    spec = QueueSpec(
        name, message_ttl=0.2, dead_letter_exchange="", dead_letter_routing_key=f"{name}.dlq"
    )
    dlq = await declare_with_dead_letter_queue(broker, spec)
    (message,) = await publish_bodies(broker, name, b"expiring")

    await asyncio.sleep(0.35)

    assert await broker.get(name) is None
    dead = await broker.receive(dlq, wait=1)
    assert [d.message.id for d in dead] == [message.id]
    assert dead[0].message.body == b"expiring"
    assert [(e["queue"], e["reason"]) for e in deaths(dead[0])] == [(name, "expired")]
    assert dead[0].message.headers["x-first-death-reason"] == "expired"


@pytest.mark.needs(Capability.QUEUES, Capability.TTL, Capability.DEAD_LETTER)
async def test_message_with_expired_own_ttl_is_dead_lettered_with_reason_expired(
    broker: Broker, name: str
) -> None:
    spec = QueueSpec(name, dead_letter_exchange="", dead_letter_routing_key=f"{name}.dlq")
    dlq = await declare_with_dead_letter_queue(broker, spec)
    await broker.publish(Message(b"expiring", routing_key=name, ttl=0.2))

    await asyncio.sleep(0.35)

    assert await broker.get(name) is None
    dead = await broker.receive(dlq, wait=1)
    assert len(dead) == 1
    assert [e["reason"] for e in deaths(dead[0])] == ["expired"]


@pytest.mark.needs(Capability.QUEUES, Capability.TTL, Capability.DEAD_LETTER)
async def test_expired_message_is_dead_lettered_without_anyone_receiving_from_its_queue(
    broker: Broker, name: str
) -> None:
    spec = QueueSpec(
        name, message_ttl=0.2, dead_letter_exchange="", dead_letter_routing_key=f"{name}.dlq"
    )
    dlq = await declare_with_dead_letter_queue(broker, spec)
    await publish_bodies(broker, name, b"expiring")

    dead = await broker.receive(dlq, wait=1.5)

    assert len(dead) == 1
    assert [e["reason"] for e in deaths(dead[0])] == ["expired"]


@pytest.mark.needs(Capability.QUEUES, Capability.TTL, Capability.DEAD_LETTER)
async def test_a_stripped_message_ttl_is_kept_as_original_expiration(
    broker: Broker, name: str
) -> None:
    spec = QueueSpec(name, dead_letter_exchange="", dead_letter_routing_key=f"{name}.dlq")
    dlq = await declare_with_dead_letter_queue(broker, spec)
    await broker.publish(Message(b"expiring", routing_key=name, ttl=0.2))

    dead = await broker.receive(dlq, wait=1.5)

    assert len(dead) == 1
    assert dead[0].message.ttl is None
    (death,) = deaths(dead[0])
    assert (death["reason"], death["original-expiration"]) == ("expired", "200")


@pytest.mark.needs(Capability.QUEUES, Capability.TTL, Capability.DEAD_LETTER)
async def test_a_queue_whose_dead_letter_exchange_is_missing_drops_and_stops_no_other_queue(
    broker: Broker, name: str
) -> None:
    other = f"{name}.other"
    await broker.declare_queue(QueueSpec(other))
    await broker.declare_queue(QueueSpec(name, dead_letter_exchange=f"{name}.missing"))
    await publish_bodies(broker, name, b"rejected")
    await publish_bodies(broker, other, b"fine")
    (delivery,) = await broker.receive(name)
    await broker.reject(delivery)  # its dead letter has nowhere to go: dropped
    await broker.publish(Message(b"expires", routing_key=name, ttl=0.1))

    await asyncio.sleep(0.4)  # expired, with the same nowhere to go

    assert await broker.get(name) is None
    assert (await broker.queue_stats(other)).at_least == 1
    assert await receive_bodies(broker, other) == [b"fine"]


# max_length and max_bytes


@pytest.mark.needs(Capability.QUEUES, Capability.MAX_LENGTH)
async def test_max_length_with_drop_head_drops_the_oldest_message(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name, max_length=2))

    await publish_bodies(broker, name, b"first", b"second", b"third")

    assert (await broker.queue_stats(name)).at_least == 2
    assert await receive_bodies(broker, name) == [b"second", b"third"]


@pytest.mark.needs(Capability.QUEUES, Capability.MAX_LENGTH, Capability.DEAD_LETTER)
async def test_message_dropped_for_max_length_is_dead_lettered_with_reason_maxlen(
    broker: Broker, name: str
) -> None:
    spec = QueueSpec(
        name, max_length=2, dead_letter_exchange="", dead_letter_routing_key=f"{name}.dlq"
    )
    dlq = await declare_with_dead_letter_queue(broker, spec)
    (oldest, *_) = await publish_bodies(broker, name, b"first", b"second", b"third")

    dead = await broker.receive(dlq, max_messages=10, wait=1)

    assert [d.message.id for d in dead] == [oldest.id]
    assert [(e["queue"], e["reason"]) for e in deaths(dead[0])] == [(name, "maxlen")]


@pytest.mark.needs(Capability.QUEUES, Capability.MAX_LENGTH, Capability.ATOMIC_BATCH_PUBLISH)
async def test_reject_publish_raises_queue_full_and_stores_nothing_of_the_batch(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name, max_length=3, overflow=Overflow.REJECT_PUBLISH))
    await publish_bodies(broker, name, b"a", b"b")
    batch = [Message(b"c", routing_key=name), Message(b"d", routing_key=name)]

    with pytest.raises(QueueFull) as raised:
        await broker.publish_batch(batch)

    assert raised.value.queue == name
    stats = await broker.queue_stats(name)
    assert (stats.depth, stats.published) == (2, 2)
    assert await receive_bodies(broker, name) == [b"a", b"b"]


@pytest.mark.needs(Capability.QUEUES, Capability.MAX_LENGTH)
async def test_reject_publish_accepts_messages_up_to_max_length(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name, max_length=3, overflow=Overflow.REJECT_PUBLISH))

    await publish_bodies(broker, name, b"a", b"b", b"c")

    with pytest.raises(QueueFull):
        await broker.publish(Message(b"d", routing_key=name))
    assert await receive_bodies(broker, name) == [b"a", b"b", b"c"]


@pytest.mark.needs(Capability.QUEUES, Capability.MAX_LENGTH, Capability.LEASES)
async def test_reject_publish_counts_leased_messages_against_max_length(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name, max_length=1, overflow=Overflow.REJECT_PUBLISH))
    await publish_bodies(broker, name, b"a")
    assert await broker.get(name) is not None

    with pytest.raises(QueueFull):
        await broker.publish(Message(b"b", routing_key=name))


@pytest.mark.needs(Capability.QUEUES, Capability.MAX_LENGTH)
async def test_max_bytes_with_drop_head_drops_the_oldest_message(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name, max_bytes=10))

    await publish_bodies(broker, name, b"aaaa", b"bbbb", b"cccc")

    assert ((await broker.queue_stats(name)).bytes or 0) <= 10
    assert await receive_bodies(broker, name) == [b"bbbb", b"cccc"]


@pytest.mark.needs(Capability.QUEUES, Capability.MAX_LENGTH)
async def test_max_bytes_counts_message_bodies_only(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name, max_bytes=10))
    headers = {"trace": "x" * 200}

    for body in (b"aaaa", b"bbbb"):
        await broker.publish(Message(body, routing_key=name, headers=headers))

    assert (await broker.queue_stats(name)).at_least == 2
    assert await receive_bodies(broker, name) == [b"aaaa", b"bbbb"]


@pytest.mark.needs(Capability.QUEUES, Capability.MAX_LENGTH, Capability.ATOMIC_BATCH_PUBLISH)
async def test_max_bytes_with_reject_publish_raises_queue_full_and_stores_nothing(
    broker: Broker, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name, max_bytes=10, overflow=Overflow.REJECT_PUBLISH))
    await publish_bodies(broker, name, b"aaaa", b"bbbb")
    batch = [Message(b"c", routing_key=name), Message(b"dddd", routing_key=name)]

    with pytest.raises(QueueFull):
        await broker.publish_batch(batch)

    stats = await broker.queue_stats(name)
    assert (stats.depth, stats.bytes) == (2, 8)
    assert await receive_bodies(broker, name) == [b"aaaa", b"bbbb"]


@pytest.mark.needs(Capability.QUEUES, Capability.MAX_LENGTH, Capability.ATOMIC_BATCH_PUBLISH)
async def test_queue_full_in_one_queue_stores_nothing_in_the_others(
    broker: Broker, name: str
) -> None:
    full = f"{name}.full"
    await broker.declare_queue(QueueSpec(name))
    await broker.declare_queue(QueueSpec(full, max_length=1, overflow=Overflow.REJECT_PUBLISH))
    batch = [
        Message(b"a", routing_key=name),
        Message(b"b", routing_key=full),
        Message(b"c", routing_key=full),
    ]

    with pytest.raises(QueueFull):
        await broker.publish_batch(batch)

    assert (await broker.queue_stats(name)).at_least == 0
    assert (await broker.queue_stats(full)).at_least == 0


# queue expiry


@pytest.mark.needs(Capability.QUEUES, Capability.TTL)
async def test_unused_queue_is_deleted_after_expires(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name, expires=1.5))
    assert name in [queue.name for queue in await broker.list_queues()]

    listed = True
    for _ in range(40):
        await asyncio.sleep(0.1)
        listed = name in [queue.name for queue in await broker.list_queues()]
        if not listed:
            break

    assert not listed, "the queue outlived expires=1.5 by more than 2.5 s"


@pytest.mark.needs(Capability.QUEUES, Capability.TTL)
async def test_queue_in_use_outlives_expires(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name, expires=1.0))

    for _ in range(7):
        await asyncio.sleep(0.25)
        assert await broker.receive(name) == []

    assert name in [queue.name for queue in await broker.list_queues()]
