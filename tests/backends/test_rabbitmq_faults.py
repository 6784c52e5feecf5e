"""Lost connections: nothing confirmed is lost, unacked messages come back, work resumes.

The server closes this test's own connections (``rabbitmqctl close_connection``, found
by their connection name), as a network failure would; other clients of the server are
left alone. The stop_app test stops the whole RabbitMQ application and always starts it
again, so it is marked slow.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from conveyor import Broker, Delivery, Message, QueueSpec, open_broker
from conveyor.errors import BrokerUnavailable, LeaseLost
from tests.backend_urls import (
    RABBITMQ_URL,
    close_rabbitmq_connections,
    rabbitmqctl,
)


@pytest.fixture
async def broker(token: str) -> AsyncIterator[Broker]:
    url = f"{RABBITMQ_URL}?connection_name={token}&connect_timeout=20&reconnect_interval=0.5"
    async with open_broker(url) as instance:
        yield instance


async def cut(token: str) -> None:
    closed = await asyncio.to_thread(close_rabbitmq_connections, token)
    assert closed >= 1, "the test's connection was not found on the server"


async def test_unacked_deliveries_come_back_redelivered_after_a_lost_connection(
    broker: Broker, token: str
) -> None:
    queue = f"{token}.q"
    await broker.declare_queue(QueueSpec(queue))
    sent = [Message(b"%d" % i, routing_key=queue) for i in range(3)]
    await broker.publish_batch(sent)
    held = await broker.receive(queue, max_messages=3)
    assert len(held) == 3

    await cut(token)

    again: list[Delivery] = []
    while len(again) < 3:
        deliveries = await broker.receive(queue, max_messages=3, wait=20)
        assert deliveries, "the unacked messages did not come back"
        again += deliveries
    assert sorted(d.message.id for d in again) == sorted(m.id for m in sent)
    assert {d.delivery_count for d in again} == {2}
    with pytest.raises(LeaseLost):
        await broker.ack_many(held)
    await broker.ack_many(again)
    assert await broker.get(queue) is None


async def test_traffic_through_a_lost_connection_loses_nothing_confirmed(
    broker: Broker, token: str
) -> None:
    queue = f"{token}.q"
    await broker.declare_queue(QueueSpec(queue))
    confirmed: set[str] = set()
    received: list[str] = []
    attempted = 0
    started, cut_done, publishing_done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def publish() -> None:
        nonlocal attempted
        after_cut = 0
        while after_cut < 20:
            batch = [Message(b"m", routing_key=queue) for _ in range(20)]
            attempted += len(batch)
            with contextlib.suppress(BrokerUnavailable):
                await broker.publish_batch(batch)
                confirmed.update(message.id for message in batch)
            started.set()
            after_cut += cut_done.is_set()
            await asyncio.sleep(0.01)
        publishing_done.set()

    async def consume() -> None:
        while not (publishing_done.is_set() and confirmed <= set(received)):
            deliveries = await broker.receive(queue, max_messages=50, wait=0.5)
            received.extend(d.message.id for d in deliveries)
            with contextlib.suppress(LeaseLost):
                await broker.ack_many(deliveries)

    consumer = asyncio.create_task(consume())
    publisher = asyncio.create_task(publish())
    await started.wait()
    await cut(token)
    cut_done.set()
    await asyncio.wait_for(publisher, 60)
    await asyncio.wait_for(consumer, 60)

    assert confirmed <= set(received), f"{len(confirmed - set(received))} confirmed lost"
    assert len(confirmed) > attempted / 2


@pytest.mark.slow
async def test_work_resumes_after_the_server_application_restarts(
    broker: Broker, token: str
) -> None:
    queue = f"{token}.q"
    await broker.declare_queue(QueueSpec(queue))
    before = Message(b"before", routing_key=queue)
    await broker.publish(before)
    during = Message(b"during", routing_key=queue)

    await asyncio.to_thread(rabbitmqctl, "stop_app")
    try:
        publishing = asyncio.create_task(broker.publish(during))
        await asyncio.sleep(1.0)
        assert not publishing.done()
    finally:
        await asyncio.to_thread(rabbitmqctl, "start_app")
        await asyncio.to_thread(rabbitmqctl, "await_startup")

    assert await asyncio.wait_for(publishing, 30) == 1
    received: list[Delivery] = []
    while len(received) < 2:
        deliveries = await broker.receive(queue, max_messages=2, wait=10)
        assert deliveries, "messages did not survive the restart"
        received += deliveries
        await broker.ack_many(deliveries)
    assert sorted(d.message.id for d in received) == sorted([before.id, during.id])
