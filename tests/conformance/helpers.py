"""Small helpers shared by the conformance tests. Public Broker interface only."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from conveyor import Broker, Delivery, Message


def bodies(deliveries: Sequence[Delivery]) -> list[bytes]:
    """The bodies of ``deliveries``, in order."""
    return [bytes(delivery.message.body) for delivery in deliveries]


async def publish_bodies(
    broker: Broker, queue: str, *payloads: bytes, delay: float = 0.0
) -> list[Message]:
    """Publish one message per payload to ``queue`` through the default exchange, in order."""
    messages = []
    for payload in payloads:
        message = Message(payload, routing_key=queue)
        assert await broker.publish(message, delay=delay) == 1
        messages.append(message)
    return messages


async def receive_bodies(broker: Broker, queue: str, *, limit: int = 100) -> list[bytes]:
    """Lease and ack everything ready in ``queue`` now; return the bodies in delivery order."""
    deliveries = await broker.receive(queue, max_messages=limit)
    if deliveries:
        await broker.ack_many(deliveries)
    return bodies(deliveries)


def deaths(delivery: Delivery) -> list[dict[str, Any]]:
    """The ``x-death`` entries of a delivered message (most recent first)."""
    entries = delivery.message.headers.get("x-death", [])
    assert isinstance(entries, list), f"x-death must be a list, not {entries!r}"
    return entries


class Stopwatch:
    """Seconds elapsed since creation, on the monotonic clock."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start
