"""Conveyor's AMQP messages are ordinary ones: plain pika reads them and writes them.

Against the real server (``CONVEYOR_RABBITMQ_URL``); every name carries a token of the
test's own, and everything with it is deleted afterwards.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pika
import pytest

from conveyor import Broker, Delivery, Message, QueueSpec, open_broker
from conveyor.errors import LeaseLost
from tests.backend_urls import (
    RABBITMQ_URL,
)


@pytest.fixture
async def broker(token: str) -> AsyncIterator[Broker]:
    instance = open_broker(RABBITMQ_URL)
    await instance.connect()
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
def plain(token: str) -> Iterator[Any]:
    """A pika channel: another AMQP client, knowing nothing of Conveyor."""
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        yield connection.channel()
    finally:
        connection.close()


def pika_get(channel: Any, queue: str) -> tuple[Any, bytes]:
    for _ in range(100):
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is not None:
            return properties, body
        time.sleep(0.05)
    raise AssertionError(f"nothing arrived in {queue}")


async def test_a_conveyor_message_reads_as_an_ordinary_amqp_message(
    broker: Broker, plain: Any, token: str
) -> None:
    queue = f"{token}.q"
    await broker.declare_queue(QueueSpec(queue, max_priority=5))
    message = Message(
        b"\x00payload\xff",
        routing_key=queue,
        headers={
            "trace": "abc",
            "attempt": 2,
            "nested": {"ok": True, "list": [1, "two"]},
            "correlation-id": "c-42",
            "reply-to": "answers",
        },
        priority=3,
        ttl=60,
        content_type="application/octet-stream",
        timestamp=1_700_000_000.25,
    )
    await broker.publish(message)

    properties, body = pika_get(plain, queue)

    assert body == b"\x00payload\xff"
    assert properties.message_id == message.id
    assert properties.content_type == "application/octet-stream"
    assert properties.delivery_mode == 2
    assert properties.priority == 3
    assert properties.expiration == "60000"
    assert properties.timestamp == 1_700_000_000
    assert (properties.correlation_id, properties.reply_to) == ("c-42", "answers")
    headers = properties.headers
    assert headers["trace"] == "abc"
    assert headers["attempt"] == 2
    assert headers["nested"] == {"ok": True, "list": [1, "two"]}
    assert headers["timestamp_in_ms"] == 1_700_000_000_250
    assert "correlation-id" not in headers
    assert "reply-to" not in headers


async def test_a_message_published_by_pika_reads_in_conveyor(
    broker: Broker, plain: Any, token: str
) -> None:
    queue = f"{token}.q"
    await broker.declare_queue(QueueSpec(queue))
    plain.basic_publish(
        "",
        queue,
        b"\xffraw body",
        pika.BasicProperties(
            content_type="text/plain",
            headers={"source": "pika", "n": 7, "deep": {"a": [1, 2]}},
            timestamp=1_700_000_123,
            correlation_id="corr-1",
        ),
    )

    (delivery,) = await broker.receive(queue, wait=5)

    received = delivery.message
    assert received.body == b"\xffraw body"
    assert received.headers == {
        "source": "pika",
        "n": 7,
        "deep": {"a": [1, 2]},
        "correlation-id": "corr-1",
    }
    assert received.content_type == "text/plain"
    assert received.timestamp == 1_700_000_123
    assert received.routing_key == queue
    assert received.id.startswith("amqp-")
    assert (delivery.delivery_count, delivery.lease_deadline) == (1, None)


async def test_a_message_without_message_id_keeps_a_stable_id_across_redelivery(
    broker: Broker, plain: Any, token: str
) -> None:
    queue = f"{token}.q"
    await broker.declare_queue(QueueSpec(queue))
    plain.basic_publish("", queue, b"no id", pika.BasicProperties(headers={"k": "v"}))
    first = await broker.get(queue)
    assert first is not None

    await broker.nack(first)
    again = await broker.get(queue)

    assert again is not None
    assert again.message.id == first.message.id
    assert (again.message.body, again.delivery_count) == (b"no id", 2)


async def test_amqp_only_header_types_arrive_as_json_compatible_values(
    broker: Broker, plain: Any, token: str
) -> None:
    queue = f"{token}.q"
    await broker.declare_queue(QueueSpec(queue))
    stamp = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
    plain.basic_publish(
        "",
        queue,
        b"x",
        pika.BasicProperties(headers={"price": Decimal("9.5"), "at": stamp, "blob": b"raw"}),
    )

    (delivery,) = await broker.receive(queue, wait=5)

    assert delivery.message.headers == {
        "price": 9.5,
        "at": stamp.timestamp(),
        "blob": "raw",
    }


async def dead_letter_once(broker: Broker, queue: str, dlq: str) -> Delivery:
    """Publish one message to ``queue``, reject it, and receive it from ``dlq``."""
    await broker.declare_queue(QueueSpec(dlq))
    await broker.declare_queue(
        QueueSpec(queue, dead_letter_exchange="", dead_letter_routing_key=dlq)
    )
    await broker.publish(Message(b"bad", routing_key=queue, headers={"trace": "t"}))
    delivery = await broker.get(queue)
    assert delivery is not None
    await broker.reject(delivery)
    (dead,) = await broker.receive(dlq, wait=5)
    return dead


async def test_x_death_reads_as_the_embedded_engine_writes_it(broker: Broker, token: str) -> None:
    before = time.time()
    queue, dlq = f"{token}.q", f"{token}.dlq"

    dead = await dead_letter_once(broker, queue, dlq)
    async with open_broker("memory://") as embedded:
        reference = await dead_letter_once(embedded, queue, dlq)

    (death,) = dead.message.headers["x-death"]
    assert {key: death[key] for key in ("queue", "reason", "count", "exchange")} == {
        "queue": queue,
        "reason": "rejected",
        "count": 1,
        "exchange": "",
    }
    assert death["routing-keys"] == [queue]
    assert isinstance(death["time"], float)
    assert before - 2 <= death["time"] <= time.time() + 1
    (expected,) = reference.message.headers["x-death"]
    assert {key: type(value) for key, value in death.items()} == {
        key: type(value) for key, value in expected.items()
    }
    first_deaths = {key for key in dead.message.headers if key.startswith("x-first-death")}
    assert first_deaths == {k for k in reference.message.headers if k.startswith("x-first-death")}
    assert dead.message.headers["x-first-death-queue"] == queue
    assert dead.message.headers["trace"] == "t"
    assert dead.delivery_count == 1


async def test_death_history_written_back_is_the_one_rabbitmq_continues(
    broker: Broker, token: str
) -> None:
    queue, dlq = f"{token}.q", f"{token}.dlq"
    dead = await dead_letter_once(broker, queue, dlq)
    await broker.ack(dead)

    moved_back = Message(dead.message.body, routing_key=queue, headers=dead.message.headers)
    await broker.publish(moved_back)
    delivery = await broker.get(queue)
    assert delivery is not None
    await broker.reject(delivery)
    (again,) = await broker.receive(dlq, wait=5)

    (death,) = again.message.headers["x-death"]
    assert (death["queue"], death["reason"], death["count"]) == (queue, "rejected", 2)


async def test_a_classic_queue_only_knows_whether_a_message_was_redelivered(
    broker: Broker, token: str
) -> None:
    queue = f"{token}.q"
    await broker.declare_queue(QueueSpec(queue))
    await broker.publish(Message(b"x", routing_key=queue))
    counts = []
    for _ in range(3):
        delivery = await broker.get(queue)
        assert delivery is not None
        counts.append(delivery.delivery_count)
        await broker.nack(delivery)

    assert counts == [1, 2, 2]


async def test_settling_a_delivery_twice_raises_lease_lost_and_harms_nothing(
    broker: Broker, token: str
) -> None:
    queue = f"{token}.q"
    await broker.declare_queue(QueueSpec(queue))
    await broker.publish_batch([Message(b"a", routing_key=queue), Message(b"b", routing_key=queue)])
    first = await broker.get(queue)
    assert first is not None
    await broker.ack(first)

    with pytest.raises(LeaseLost):
        await broker.ack(first)
    with pytest.raises(LeaseLost):
        await broker.nack(first)

    second = await broker.get(queue)
    assert second is not None
    assert second.message.body == b"b"
    await broker.ack(second)


async def test_ack_many_acks_runs_and_scattered_deliveries_alike(
    broker: Broker, token: str
) -> None:
    queue = f"{token}.q"
    await broker.declare_queue(QueueSpec(queue))
    await broker.publish_batch([Message(b"%d" % i, routing_key=queue) for i in range(10)])
    deliveries: list[Delivery] = []
    while len(deliveries) < 10:
        deliveries += await broker.receive(queue, max_messages=10, wait=5)
    kept = deliveries[3:5]

    await broker.ack_many(deliveries[:3] + deliveries[5:8] + deliveries[9:])
    await broker.ack_many([deliveries[8]])

    for delivery in kept:
        await broker.nack(delivery)
    again: list[Delivery] = []
    while len(again) < 2:
        arrived = await broker.receive(queue, max_messages=10, wait=5)
        assert arrived, "the requeued deliveries did not come back"
        again += arrived
    assert sorted(d.message.body for d in again) == [b"3", b"4"]
    assert await broker.receive(queue, wait=0.3) == []
    await broker.ack_many(again)
