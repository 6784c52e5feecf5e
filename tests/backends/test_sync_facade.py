"""The blocking facade, used the way a script or a WSGI view would: no event loop anywhere."""

from __future__ import annotations

import inspect

import pytest

from conveyor import Broker, Message, QueueSpec, SyncBroker, open_broker
from conveyor.errors import QueueNotFound


def test_sync_broker_publishes_and_receives_without_an_event_loop(sqlite_url: str) -> None:
    with open_broker(sqlite_url).sync() as broker:
        broker.declare_queue(QueueSpec("emails"))
        assert broker.publish(Message(b"hello", routing_key="emails")) == 1
        assert broker.publish_batch([Message(b"a", routing_key="emails")] * 3) == [1, 1, 1]
        delivery = broker.get("emails")
        assert delivery is not None
        assert delivery.message.body == b"hello"
        broker.ack(delivery)
        assert broker.queue_stats("emails").ready == 3


def test_sync_broker_raises_the_same_errors_as_the_async_one(sqlite_url: str) -> None:
    with open_broker(sqlite_url).sync() as broker, pytest.raises(QueueNotFound):
        broker.queue_stats("missing")


def test_messages_published_through_the_facade_are_seen_by_another_broker(
    sqlite_url: str,
) -> None:
    with open_broker(sqlite_url).sync() as producer:
        producer.declare_queue(QueueSpec("jobs"))
        producer.publish(Message(b"job", routing_key="jobs"))
    with open_broker(sqlite_url).sync() as consumer:
        delivery = consumer.get("jobs")
        assert delivery is not None
        assert delivery.message.body == b"job"


def test_every_public_broker_coroutine_has_a_blocking_twin_with_its_signature() -> None:
    for name, method in inspect.getmembers(Broker, inspect.iscoroutinefunction):
        if name.startswith("_") or name in ("connect", "close"):
            continue
        twin = getattr(SyncBroker, name, None)
        assert twin is not None, f"SyncBroker lacks {name}"
        expected = inspect.signature(method)
        assert inspect.signature(twin).parameters == expected.parameters, name
        assert inspect.signature(twin).return_annotation == expected.return_annotation, name


def test_nack_reject_purge_and_delete_block_until_done(sqlite_url: str) -> None:
    with open_broker(sqlite_url).sync() as broker:
        broker.declare_queue(QueueSpec("work"))
        broker.publish_batch([Message(b"a", routing_key="work"), Message(b"b", routing_key="work")])
        first = broker.get("work")
        assert first is not None
        broker.nack(first)
        again = broker.get("work")
        assert again is not None
        assert again.redelivered
        broker.reject(again)
        assert broker.purge_queue("work") == 1
        assert broker.delete_queue("work") == 0
        assert [spec.name for spec in broker.list_queues()] == []
