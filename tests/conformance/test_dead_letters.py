"""Dead-lettering: x-death history, delivery limits, dead-letter exchanges, retry cycles."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor import Binding, Broker, Capability, ExchangeSpec, ExchangeType, Message, QueueSpec
from tests.conformance.helpers import bodies, deaths, publish_bodies

LAPSE = 0.2
PAST_LAPSE = 0.35


def dead_lettering_to(name: str, dlq: str, **options: object) -> QueueSpec:
    """A spec for ``name`` that dead-letters straight into the queue ``dlq``."""
    return QueueSpec.from_options(
        name, {"dead_letter_exchange": "", "dead_letter_routing_key": dlq, **options}
    )


async def reject_one(broker: Broker, queue: str) -> None:
    delivery = await broker.get(queue)
    assert delivery is not None
    await broker.reject(delivery)


@pytest.mark.needs(Capability.QUEUES, Capability.DEAD_LETTER)
async def test_rejected_message_goes_to_the_dead_letter_queue_with_x_death(
    broker: Broker, name: str
) -> None:
    dlq = f"{name}.dlq"
    await broker.declare_queue(QueueSpec(dlq))
    await broker.declare_queue(dead_lettering_to(name, dlq))
    await publish_bodies(broker, name, b"bad")
    before = time.time()

    await reject_one(broker, name)

    dead = await broker.receive(dlq, wait=1)
    assert bodies(dead) == [b"bad"]
    (death,) = deaths(dead[0])
    assert death["queue"] == name
    assert death["reason"] == "rejected"
    assert death["count"] == 1
    assert death["exchange"] == ""
    assert death["routing-keys"] == [name]
    assert isinstance(death["time"], int | float)
    assert before - 1 <= death["time"] <= time.time() + 1


@pytest.mark.needs(Capability.QUEUES, Capability.DEAD_LETTER)
async def test_dead_lettered_message_records_its_first_death(broker: Broker, name: str) -> None:
    dlq = f"{name}.dlq"
    await broker.declare_queue(QueueSpec(dlq))
    await broker.declare_queue(dead_lettering_to(name, dlq))
    await publish_bodies(broker, name, b"bad")

    await reject_one(broker, name)

    (dead,) = await broker.receive(dlq, wait=1)
    assert dead.message.headers["x-first-death-queue"] == name
    assert dead.message.headers["x-first-death-reason"] == "rejected"


@pytest.mark.needs(Capability.QUEUES, Capability.DEAD_LETTER)
async def test_dead_lettering_keeps_message_id_body_and_headers(broker: Broker, name: str) -> None:
    dlq = f"{name}.dlq"
    await broker.declare_queue(QueueSpec(dlq))
    await broker.declare_queue(dead_lettering_to(name, dlq))
    message = Message(
        b"\x00body\xff", routing_key=name, headers={"trace": "t-1"}, content_type="text/plain"
    )
    await broker.publish(message)

    await reject_one(broker, name)

    (dead,) = await broker.receive(dlq, wait=1)
    assert dead.message.id == message.id
    assert dead.message.body == message.body
    assert dead.message.headers["trace"] == "t-1"
    assert dead.message.content_type == "text/plain"
    assert dead.delivery_count == 1  # a fresh start in the dead-letter queue


@pytest.mark.needs(Capability.QUEUES, Capability.DEAD_LETTER, Capability.EXACT_STATS)
async def test_dead_lettered_messages_are_counted_in_the_source_queue_stats(
    broker: Broker, name: str
) -> None:
    dlq = f"{name}.dlq"
    await broker.declare_queue(QueueSpec(dlq))
    await broker.declare_queue(dead_lettering_to(name, dlq))
    await publish_bodies(broker, name, b"a", b"b")

    await reject_one(broker, name)

    stats = await broker.queue_stats(name)
    assert (stats.dead_lettered, stats.depth) == (1, 1)
    assert (await broker.queue_stats(dlq)).ready == 1


@pytest.mark.needs(Capability.QUEUES, Capability.DEAD_LETTER, Capability.EXCHANGES)
async def test_dead_letters_keep_their_routing_key_without_a_dead_letter_routing_key(
    broker: Broker, name: str
) -> None:
    dlx, dlq = f"{name}.dlx", f"{name}.dlq"
    await broker.declare_exchange(ExchangeSpec(dlx, ExchangeType.DIRECT))
    await broker.declare_queue(QueueSpec(dlq))
    await broker.bind(Binding(dlx, dlq, routing_key="orders.created"))
    await broker.declare_queue(QueueSpec(name, dead_letter_exchange=dlx))
    src = f"{name}.src"
    await broker.declare_exchange(ExchangeSpec(src, ExchangeType.DIRECT))
    await broker.bind(Binding(src, name, routing_key="orders.created"))
    await broker.publish(Message(b"order", routing_key="orders.created"), exchange=src)

    await reject_one(broker, name)

    (dead,) = await broker.receive(dlq, wait=1)
    assert dead.message.routing_key == "orders.created"
    (death,) = deaths(dead)
    assert (death["exchange"], death["routing-keys"]) == (src, ["orders.created"])


@pytest.mark.needs(
    Capability.QUEUES, Capability.DEAD_LETTER, Capability.DELIVERY_LIMIT, Capability.LEASES
)
async def test_message_past_its_delivery_limit_is_dead_lettered_with_reason_delivery_limit(
    broker: Broker, name: str
) -> None:
    dlq = f"{name}.dlq"
    await broker.declare_queue(QueueSpec(dlq))
    await broker.declare_queue(dead_lettering_to(name, dlq, delivery_limit=2))
    (message,) = await publish_bodies(broker, name, b"poison")
    for attempt in (1, 2):
        delivery = await broker.get(name, lease_timeout=LAPSE)
        assert delivery is not None
        assert delivery.delivery_count == attempt
        await asyncio.sleep(PAST_LAPSE)

    assert await broker.get(name) is None

    (dead,) = await broker.receive(dlq, wait=1)
    assert dead.message.id == message.id
    assert [(e["queue"], e["reason"]) for e in deaths(dead)] == [(name, "delivery_limit")]
    assert (await broker.queue_stats(name)).at_least == 0


@pytest.mark.needs(
    Capability.QUEUES, Capability.DEAD_LETTER, Capability.DELIVERY_LIMIT, Capability.LEASES
)
async def test_message_under_its_delivery_limit_is_still_delivered(
    broker: Broker, name: str
) -> None:
    dlq = f"{name}.dlq"
    await broker.declare_queue(QueueSpec(dlq))
    await broker.declare_queue(dead_lettering_to(name, dlq, delivery_limit=2))
    await publish_bodies(broker, name, b"retry-me")
    assert await broker.get(name, lease_timeout=LAPSE) is not None
    await asyncio.sleep(PAST_LAPSE)

    second = await broker.get(name)

    assert second is not None
    assert second.delivery_count == 2
    assert await broker.get(dlq) is None


@pytest.mark.needs(
    Capability.QUEUES, Capability.DEAD_LETTER, Capability.DELIVERY_LIMIT, Capability.LEASES
)
async def test_poison_message_is_skipped_and_the_next_one_delivered(
    broker: Broker, name: str
) -> None:
    dlq = f"{name}.dlq"
    await broker.declare_queue(QueueSpec(dlq))
    await broker.declare_queue(dead_lettering_to(name, dlq, delivery_limit=1))
    await publish_bodies(broker, name, b"poison", b"good")
    assert await broker.get(name, lease_timeout=LAPSE) is not None
    await asyncio.sleep(PAST_LAPSE)

    deliveries = await broker.receive(name, max_messages=10)

    assert bodies(deliveries) == [b"good"]
    assert bodies(await broker.receive(dlq, max_messages=10)) == [b"poison"]


@pytest.mark.needs(Capability.QUEUES, Capability.DEAD_LETTER, Capability.DELIVERY_LIMIT)
async def test_requeued_message_is_dead_lettered_once_past_its_delivery_limit(
    broker: Broker, name: str
) -> None:
    dlq = f"{name}.dlq"
    await broker.declare_queue(QueueSpec(dlq))
    await broker.declare_queue(dead_lettering_to(name, dlq, delivery_limit=2))
    (message,) = await publish_bodies(broker, name, b"poison")
    for attempt in (1, 2):
        (delivery,) = await broker.receive(name, wait=1)
        assert delivery.delivery_count == attempt
        await broker.nack(delivery, requeue=True)

    assert await broker.receive(name, wait=0.5) == []
    (dead,) = await broker.receive(dlq, wait=2)
    assert dead.message.id == message.id
    assert deaths(dead)[0]["queue"] == name


@pytest.mark.needs(Capability.QUEUES, Capability.DEAD_LETTER, Capability.EXCHANGES)
async def test_dead_lettering_through_a_fanout_exchange_reaches_every_bound_queue(
    broker: Broker, name: str
) -> None:
    dlx = f"{name}.dlx"
    dlqs = [f"{name}.dlq1", f"{name}.dlq2"]
    await broker.declare_exchange(ExchangeSpec(dlx, ExchangeType.FANOUT))
    for dlq in dlqs:
        await broker.declare_queue(QueueSpec(dlq))
        await broker.bind(Binding(dlx, dlq))
    await broker.declare_queue(QueueSpec(name, dead_letter_exchange=dlx))
    (message,) = await publish_bodies(broker, name, b"bad")

    await reject_one(broker, name)

    for dlq in dlqs:
        (dead,) = await broker.receive(dlq, wait=1)
        assert dead.message.id == message.id
        assert [e["reason"] for e in deaths(dead)] == ["rejected"]


@pytest.mark.needs(Capability.QUEUES, Capability.DEAD_LETTER, Capability.TTL)
async def test_retry_with_delay_cycle_returns_the_message_with_both_deaths(
    broker: Broker, name: str
) -> None:
    work, retry = name, f"{name}.retry"
    await broker.declare_queue(dead_lettering_to(work, retry))
    await broker.declare_queue(dead_lettering_to(retry, work, message_ttl=0.3))
    (message,) = await publish_bodies(broker, work, b"job")

    await reject_one(broker, work)

    assert await broker.get(work) is None  # parked in the retry queue for its TTL
    again = await broker.receive(work, wait=1.5)
    assert [d.message.id for d in again] == [message.id]
    assert [(e["queue"], e["reason"]) for e in deaths(again[0])] == [
        (retry, "expired"),
        (work, "rejected"),
    ]
    assert again[0].message.headers["x-first-death-queue"] == work


@pytest.mark.needs(Capability.DEAD_LETTER, Capability.EXCHANGES)
async def test_empty_dead_letter_routing_key_is_used_as_given(broker: Broker, name: str) -> None:
    exchange, dead = f"{name}.dlx", f"{name}.dead"
    await broker.declare_exchange(ExchangeSpec(exchange, ExchangeType.DIRECT))
    await broker.declare_queue(
        QueueSpec(name, dead_letter_exchange=exchange, dead_letter_routing_key="")
    )
    await broker.declare_queue(QueueSpec(dead))
    await broker.bind(Binding(exchange, dead, ""))
    await broker.publish(Message(b"x", routing_key=name))
    (delivery,) = await broker.receive(name)
    await broker.reject(delivery)
    (dead_letter,) = await broker.receive(dead)
    assert dead_letter.message.body == b"x"
