"""Queues on Redis as other Redis clients see them: entries they add are consumed, the
entries Conveyor adds read plainly with XRANGE, and a server that forgot its scripts is
no trouble."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio

from conveyor import open_broker
from conveyor.brokers.redis.broker import RedisBroker
from conveyor.brokers.types import QueueSpec
from conveyor.message import Message
from tests.backend_urls import BACKENDS, REDIS_URL


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[RedisBroker]:
    """A Redis broker under a key prefix of this test's own on the shared server."""
    instance = open_broker(BACKENDS["redis"](tmp_path))
    assert isinstance(instance, RedisBroker)
    await instance.connect()
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
async def plain() -> AsyncIterator[redis.asyncio.Redis]:
    """A plain redis-py client of the same server, as another application would use."""
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


def _stream(broker: RedisBroker, queue: str) -> str:
    return f"{broker.endpoint.options.prefix}queue:{queue}"


async def test_an_entry_added_by_plain_xadd_is_consumed_with_its_fields_as_json(
    broker: RedisBroker, plain: redis.asyncio.Redis
) -> None:
    await broker.declare_queue(QueueSpec("signups"))
    entry_id = await plain.xadd(_stream(broker, "signups"), {"user": "ada", "plan": "pro"})

    (delivery,) = await broker.receive("signups", wait=5)
    assert json.loads(delivery.message.body) == {"user": "ada", "plan": "pro"}
    assert delivery.message.content_type == "application/json"
    assert delivery.message.id == entry_id.decode()
    await broker.ack(delivery)
    assert (await broker.queue_stats("signups")).depth == 0
    assert await plain.xlen(_stream(broker, "signups")) == 0


async def test_an_entry_with_a_body_field_is_delivered_with_that_body(
    broker: RedisBroker, plain: redis.asyncio.Redis
) -> None:
    await broker.declare_queue(QueueSpec("raw"))
    fields = {"body": b"\x00binary\xff", "id": "order-17", "headers": '{"source": "legacy"}'}
    await plain.xadd(_stream(broker, "raw"), fields)  # type: ignore[arg-type]

    (delivery,) = await broker.receive("raw", wait=5)
    assert delivery.message.body == b"\x00binary\xff"
    assert (delivery.message.id, delivery.message.headers) == ("order-17", {"source": "legacy"})


async def test_xrange_on_a_queue_shows_readable_fields(
    broker: RedisBroker, plain: redis.asyncio.Redis
) -> None:
    await broker.declare_queue(QueueSpec("emails"))
    sent = Message(
        b'{"to": "ada@example.com"}',
        routing_key="emails",
        headers={"task": "send_welcome"},
        content_type="application/json",
    )
    await broker.publish(sent)

    ((_, fields),) = await plain.xrange(_stream(broker, "emails"))
    assert fields[b"body"] == b'{"to": "ada@example.com"}'
    assert json.loads(fields[b"headers"]) == {"task": "send_welcome"}
    assert fields[b"content_type"] == b"application/json"
    assert (fields[b"id"], fields[b"routing_key"]) == (sent.id.encode(), b"emails")


async def test_publishing_and_receiving_go_on_after_the_server_forgets_its_scripts(
    broker: RedisBroker, plain: redis.asyncio.Redis
) -> None:
    await broker.declare_queue(QueueSpec("jobs"))
    await broker.publish(Message(b"before", routing_key="jobs"))
    await plain.script_flush()

    await broker.publish(Message(b"after", routing_key="jobs"))
    deliveries = await broker.receive("jobs", max_messages=2, wait=5)
    assert [d.message.body for d in deliveries] == [b"before", b"after"]
    await broker.ack_many(deliveries)


async def test_a_lapsed_lease_is_redelivered_with_its_count_from_the_pending_entries(
    broker: RedisBroker, plain: redis.asyncio.Redis
) -> None:
    await broker.declare_queue(QueueSpec("work", lease_timeout=0.2))
    await broker.publish(Message(b"job", routing_key="work"))
    (first,) = await broker.receive("work")

    (again,) = await broker.receive("work", wait=10)
    assert (again.message.id, again.delivery_count) == (first.message.id, 2)
    ((_, _, _, times_delivered),) = [
        (p["message_id"], p["consumer"], p["time_since_delivered"], p["times_delivered"])
        for p in await plain.xpending_range(_stream(broker, "work"), "conveyor", "-", "+", 10)
    ]
    assert times_delivered == 2
