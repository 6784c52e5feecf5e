"""Dead letters of task queues: list, inspect, replay and purge them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from conveyor.brokers.base import Broker
from conveyor.brokers.capabilities import Capability
from conveyor.brokers.types import Delivery, QueuedMessage
from conveyor.codecs import loads
from conveyor.errors import DecodeError
from conveyor.tasks.states import take


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A job that failed for good, with what its last failure left behind.

    ``reason`` is why the worker gave up (``permanent_error``, ``retries_exhausted``,
    ``delivery_limit``) or, for a message the queue itself dead-lettered, the queue's reason
    (``expired``, ``maxlen``, ``rejected``).
    """

    job_id: str
    task: str | None
    queue: str
    arguments: Any
    reason: str
    error_type: str | None
    error_message: str | None
    traceback: str | None
    attempts: int | None
    first_attempt_at: float | None
    last_attempt_at: float | None
    failed_at: float | None
    worker: str | None
    queued: QueuedMessage

    def to_json(self) -> dict[str, Any]:
        """The failure record as JSON (without the stored message), for the API and CLI."""
        return {
            "job_id": self.job_id,
            "task": self.task,
            "queue": self.queue,
            "reason": self.reason,
            "arguments": self.arguments,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "attempts": self.attempts,
            "first_attempt_at": self.first_attempt_at,
            "last_attempt_at": self.last_attempt_at,
            "failed_at": self.failed_at,
            "worker": self.worker,
        }

    @classmethod
    def from_queued(cls, queued: QueuedMessage) -> DeadLetter:
        message = queued.message
        failure = _mapping(message.headers.get("x-failure"))
        deaths = message.headers.get("x-death")
        death = _mapping(deaths[0] if isinstance(deaths, list) and deaths else None)
        try:
            arguments = loads(message.body)
        except DecodeError:
            arguments = None
        return cls(
            job_id=message.id,
            task=_text(failure.get("task") or message.headers.get("task")),
            queue=str(failure.get("queue") or death.get("queue", "")),
            arguments=arguments,
            reason=str(failure.get("reason") or death.get("reason", "unknown")),
            error_type=_text(failure.get("error_type")),
            error_message=_text(failure.get("error_message")),
            traceback=_text(failure.get("traceback")),
            attempts=_whole(failure.get("attempts")),
            first_attempt_at=_moment(failure.get("first_attempt_at")),
            last_attempt_at=_moment(failure.get("last_attempt_at")),
            failed_at=_moment(failure.get("failed_at")),
            worker=_text(failure.get("worker")),
            queued=queued,
        )


def _mapping(value: Any) -> dict[str, Any]:
    """A header that should hold a table. Here and below, a value of the wrong type
    (another client's malformed header) reads as missing, so that one bad message cannot
    hide the others."""
    return dict(value) if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _moment(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        moment = float(value)
    except OverflowError:
        return None
    return moment if math.isfinite(moment) else None


async def list_dead_letters(
    broker: Broker, dead_letter_queue: str, *, limit: int, offset: int
) -> list[DeadLetter]:
    """Dead letters oldest first, read without removing them.

    With BROWSE they are read in place. Otherwise they are taken (``offset + limit`` of
    them) and given back at once: the queue keeps them, in order, but RabbitMQ marks them
    redelivered. A dead-letter queue has no consumer of its own, so nothing else notices.
    """
    if Capability.BROWSE in broker.capabilities:
        listed = await broker.browse(dead_letter_queue, limit=limit, offset=offset)
        return [DeadLetter.from_queued(queued) for queued in listed]
    taken = await take(broker, dead_letter_queue, offset + limit)
    try:
        return [DeadLetter.from_queued(_as_queued(d)) for d in taken[offset : offset + limit]]
    finally:
        await broker.release(taken)


def _as_queued(delivery: Delivery) -> QueuedMessage:
    message = delivery.message
    return QueuedMessage(
        message,
        delivery.queue,
        delivery.delivery_count,
        message.timestamp,
        message.timestamp,
        False,
    )
