"""Dead letters of task queues: list, inspect, replay and purge them."""

from __future__ import annotations

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
        failure: dict[str, Any] = dict(message.headers.get("x-failure") or {})
        deaths = message.headers.get("x-death") or [{}]
        try:
            arguments = loads(message.body)
        except DecodeError:
            arguments = None
        return cls(
            job_id=message.id,
            task=failure.get("task") or message.headers.get("task"),
            queue=failure.get("queue") or deaths[0].get("queue", ""),
            arguments=arguments,
            reason=failure.get("reason") or deaths[0].get("reason", "unknown"),
            error_type=failure.get("error_type"),
            error_message=failure.get("error_message"),
            traceback=failure.get("traceback"),
            attempts=failure.get("attempts"),
            first_attempt_at=failure.get("first_attempt_at"),
            last_attempt_at=failure.get("last_attempt_at"),
            failed_at=failure.get("failed_at"),
            worker=failure.get("worker"),
            queued=queued,
        )


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
