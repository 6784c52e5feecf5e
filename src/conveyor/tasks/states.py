"""The job state machine: submitting a job and settling an attempt, on any broker.

A job has a message in a queue of the Broker and a record in a ResultStore. Where the
broker keeps the records itself and declares ATOMIC_SETTLE (the embedded engine), both
change in one transaction. Elsewhere they change in this order, which keeps delivery at
least once and never leaves a stored outcome contradicted:

- submit: create the record (put-if-absent by idempotency key), then publish the message;
  a failed publish discards the record again, so a retry with the same key enqueues anew.
- start: the record becomes ``running`` (in batches, behind the jobs that started).
- settle: store the outcome first, then settle the message: ack a finished job; give a
  retrying one back after its delay (``nack`` with ``delay``); publish a dead job's copy,
  with its failure record, to the dead-letter queue, then ack the original. A crash
  between the two steps leaves the message to be redelivered and run again, and the next
  outcome overwrites the record; a crash between publishing a dead letter and the ack
  may leave the dead letter and one more attempt.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from conveyor.brokers.base import Broker
from conveyor.brokers.capabilities import Capability
from conveyor.brokers.results import JobStart, ResultStore, check_same_request
from conveyor.brokers.types import (
    DeadLetterReason,
    Delivery,
    JobRecord,
    JobStatus,
    JobSubmission,
    Settlement,
)
from conveyor.errors import IdempotencyConflict, JobNotFound, LeaseLost
from conveyor.message import Message
from conveyor.names import DEAD_LETTER_SUFFIX

_ACKED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def dead_letter_queue(queue: str) -> str:
    """The queue where ``queue``'s jobs go after their last attempt."""
    return f"{queue}{DEAD_LETTER_SUFFIX}"


class JobStates:
    """Moves jobs through their states on one broker and one result store."""

    def __init__(self, broker: Broker, results: ResultStore) -> None:
        self.broker = broker
        self.results = results
        self.atomic = (
            Capability.ATOMIC_SETTLE in broker.capabilities
            and Capability.RESULTS in broker.capabilities
            and broker.results() is results
        )

    async def submit(self, submissions: Sequence[JobSubmission]) -> list[JobRecord]:
        """Record and enqueue jobs; an idempotency key already used returns that job."""
        if self.atomic:
            return await self.broker.submit_jobs(submissions)
        records = await self.results.create_jobs(submissions)
        fresh = [s for s, r in zip(submissions, records, strict=True) if r.id == s.message.id]
        try:
            for submission, record in zip(submissions, records, strict=True):
                if record.id != submission.message.id:
                    check_same_request(submission, record)
        except IdempotencyConflict:
            await self.results.discard_jobs([s.message.id for s in fresh])
            raise
        by_delay: dict[float, list[Message]] = defaultdict(list)
        for submission in fresh:
            by_delay[submission.delay].append(submission.message)
        published: list[str] = []
        try:
            for delay, messages in by_delay.items():
                await self.broker.publish_batch(messages, mandatory=True, delay=delay)
                published.extend(message.id for message in messages)
        except BaseException:
            unsent = [s.message.id for s in fresh if s.message.id not in set(published)]
            await self.results.discard_jobs(unsent)
            raise
        return records

    async def start(self, starts: Sequence[JobStart]) -> None:
        """Record attempts that began (nothing to do where running is read off leases)."""
        if starts and not self.atomic:
            await self.results.record_starts(starts)

    async def settle(
        self, settlements: Sequence[Settlement], *, starts: Sequence[JobStart] = ()
    ) -> list[Settlement]:
        """Store each outcome and settle its message; returns those whose lease lapsed.

        ``starts`` (other jobs' attempts that began) are recorded with the outcomes.
        """
        if not settlements:
            await self.start(starts)
            return []
        if self.atomic:
            return await self.broker.settle(settlements)
        await self.results.record_outcomes(settlements, starts=starts)
        lost: list[Settlement] = []
        acking = [s for s in settlements if s.status in _ACKED]
        lost.extend(await self._ack(acking))
        for settlement in settlements:
            if settlement.status in _ACKED:
                continue
            try:
                if settlement.status is JobStatus.RETRYING:
                    await self.broker.nack(
                        settlement.delivery, requeue=True, delay=settlement.retry_delay
                    )
                else:
                    await self._dead_letter(settlement)
            except LeaseLost:
                lost.append(settlement)
        return lost

    async def replay(
        self, dead_queue: str, to_queue: str, *, job_ids: Sequence[str] | None = None
    ) -> int:
        """Send dead jobs (all, or ``job_ids``) back to ``to_queue`` as new deliveries.

        With BROWSE the broker moves them in one step. Otherwise every message waiting in
        the dead-letter queue is received; the chosen ones are published to ``to_queue``
        and acked, the others given back (a crash in between may leave a job in both).
        """
        if Capability.BROWSE in self.broker.capabilities:
            if not self.atomic:
                listed = await self.broker.browse(dead_queue, limit=1_000_000)
                ids = {queued.message.id for queued in listed}
                await self.results.requeued(sorted(ids if job_ids is None else ids & set(job_ids)))
            return await self.broker.move_messages(dead_queue, to_queue, message_ids=job_ids)
        wanted = None if job_ids is None else set(job_ids)
        waiting = (await self.broker.queue_stats(dead_queue)).ready
        taken = await take(self.broker, dead_queue, waiting)
        chosen = [d for d in taken if wanted is None or d.message.id in wanted]
        others = [d for d in taken if wanted is not None and d.message.id not in wanted]
        await self.results.requeued([d.message.id for d in chosen])
        for delivery in chosen:
            message = delivery.message
            await self.broker.publish(
                Message(
                    message.body,
                    routing_key=to_queue,
                    headers=message.headers,
                    id=message.id,
                    timestamp=message.timestamp,
                    content_type=message.content_type,
                ),
                mandatory=True,
            )
        await self.broker.ack_many(chosen)
        await self.broker.release(others)
        return len(chosen)

    async def _ack(self, settlements: Sequence[Settlement]) -> list[Settlement]:
        if not settlements:
            return []
        try:
            await self.broker.ack_many([s.delivery for s in settlements])
        except LeaseLost:
            lost = []
            for settlement in settlements:  # which ones: ack each (acked ones ack again)
                with contextlib.suppress(LeaseLost):
                    await self.broker.ack(settlement.delivery)
                    continue
                lost.append(settlement)
            return lost
        return []

    async def _dead_letter(self, settlement: Settlement) -> None:
        """Publish the job's copy with its failure record to the dead-letter queue, then ack."""
        delivery = settlement.delivery
        message = delivery.message
        headers = dict(message.headers)
        headers["x-failure"] = await self._failure_record(settlement)
        headers["x-death"] = [_death(delivery), *headers.get("x-death", ())]
        copy = Message(
            message.body,
            routing_key=dead_letter_queue(delivery.queue),
            headers=headers,
            id=message.id,
            timestamp=message.timestamp,
            content_type=message.content_type,
        )
        await self.broker.publish(copy, mandatory=True)
        await self.broker.ack(delivery)

    async def _failure_record(self, settlement: Settlement) -> dict[str, Any]:
        """What an operator needs to judge a dead letter (the embedded engine's format)."""
        error = dict(settlement.error or {})
        try:
            record: JobRecord | None = await self.results.get_job(settlement.delivery.message.id)
        except JobNotFound:
            record = None
        first = record.first_attempt_at if record is not None else None
        return {
            "task": record.task if record is not None else None,
            "first_attempt_at": first if first is not None else settlement.started_at,
            "reason": error.get("reason"),
            "error_type": error.get("type"),
            "error_message": error.get("message"),
            "traceback": error.get("traceback"),
            "attempts": settlement.delivery.delivery_count,
            "last_attempt_at": settlement.started_at,
            "failed_at": time.time(),
            "queue": settlement.delivery.queue,
            "worker": settlement.worker,
        }


async def take(broker: Broker, queue: str, count: int) -> list[Delivery]:
    """Receive up to ``count`` messages waiting in ``queue`` now (without waiting for more)."""
    taken: list[Delivery] = []
    while len(taken) < count:
        batch = await broker.receive(queue, max_messages=count - len(taken))
        if not batch:
            break
        taken.extend(batch)
    return taken


def _death(delivery: Delivery) -> dict[str, Any]:
    return {
        "queue": delivery.queue,
        "reason": DeadLetterReason.REJECTED.value,
        "count": 1,
        "time": time.time(),
        "exchange": "",
        "routing-keys": [delivery.message.routing_key],
    }
