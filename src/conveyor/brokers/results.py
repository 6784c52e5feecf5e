"""The ResultStore interface: where job records, results, worker coordination and the
console's queue history live.

Kept apart from the Broker because real engines keep messages and state apart: RabbitMQ
carries jobs, Redis (or a database) remembers what became of them, and several hosts
share both. The embedded broker keeps one of its own, in the same file as its messages.

Writes are last-writer-wins per job; the job state machine in ``conveyor.tasks.states``
orders them so that delivery stays at least once (see there).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Self

from conveyor.brokers.types import (
    DURATION_BUCKETS,
    JobPage,
    JobQuery,
    JobRecord,
    JobSubmission,
    QueueSample,
    Settlement,
    TaskStats,
    WorkerInfo,
)
from conveyor.errors import ConfigError, IdempotencyConflict

SAMPLE_INTERVAL = 5.0
SAMPLE_RETENTION = 3600.0


def request_digest(task: str, body: bytes) -> str:
    """What an idempotency key stands for: this task with these encoded arguments."""
    return hashlib.sha256(task.encode() + b"\0" + body).hexdigest()[:32]


def check_same_request(submission: JobSubmission, existing: JobRecord) -> None:
    """Refuse a key sent again with another request (a record from before digests were
    kept has none, and passes)."""
    key, kept, sent = submission.idempotency_key, existing.request_digest, submission.request_digest
    if key is not None and kept is not None and sent is not None and kept != sent:
        raise IdempotencyConflict(key, existing.id)


@dataclass(frozen=True, slots=True)
class JobStart:
    """A job's attempt began: recorded where running cannot be read off a lease."""

    job_id: str
    attempt: int
    started_at: float
    worker: str
    tag: int = 0
    """The delivery's tag in the worker that started it (not stored)."""


@dataclass(frozen=True, slots=True)
class Sampling:
    """The rules every store keeps queue samples by, in whole milliseconds so that both
    stores draw slot boundaries at the same instants."""

    interval_ms: int
    retention_ms: int

    @classmethod
    def of(cls, interval: float, retention: float) -> Sampling:
        for name, value in (("interval", interval), ("retention", retention)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"sample {name} must be a number of seconds, not {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"sample {name} must be > 0 seconds, not {value}")
        return cls(max(1, round(interval * 1000)), max(1, round(retention * 1000)))

    @property
    def limit(self) -> int:
        """Samples kept per queue at most: a writer whose clock runs ahead still cannot
        grow a series past what the retention holds at one sample per interval."""
        return self.retention_ms // self.interval_ms + 1

    def slot(self, at_ms: int) -> tuple[int, int]:
        """The slot ``at_ms`` falls in, as [start, end) milliseconds."""
        start = at_ms - at_ms % self.interval_ms
        return start, start + self.interval_ms


class ResultStore(ABC):
    """Job records with a TTL, idempotency keys, rate-limit tokens, worker heartbeats and
    queue samples.

    Use it as an async context manager, or call ``connect()`` and ``close()``.
    """

    scheme: ClassVar[str]

    def __init__(self, url: str) -> None:
        self.url = url

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abstractmethod
    async def connect(self) -> None:
        """Open connections; idempotent."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise BrokerUnavailable unless the store answers."""

    # job records

    @abstractmethod
    async def create_jobs(self, submissions: Sequence[JobSubmission]) -> list[JobRecord]:
        """Record each job as queued (or scheduled, with a delay), put-if-absent by key.

        A submission whose ``idempotency_key`` matches a job created less than
        ``idempotency_window`` seconds ago gets that job's record instead (its id differs
        from the submission's message id), and nothing is written for it. Among callers
        racing with one key (every worker ticking a schedule), exactly one creates the job.
        """

    @abstractmethod
    async def discard_jobs(self, job_ids: Sequence[str]) -> None:
        """Forget records whose messages could not be enqueued, so that a retry with the
        same idempotency key creates the job anew."""

    @abstractmethod
    async def get_job(self, job_id: str) -> JobRecord:
        """The job's record. Raises JobNotFound if it never existed or has expired."""

    async def wait_for_job(self, job_id: str, timeout: float) -> JobRecord:
        """The record once the job has finished, or as it is when ``timeout`` runs out."""
        deadline = time.monotonic() + timeout
        pause = 0.002
        while True:
            record = await self.get_job(job_id)
            left = deadline - time.monotonic()
            if record.status.finished or left <= 0:
                return record
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.1)

    @abstractmethod
    async def record_starts(self, starts: Sequence[JobStart]) -> None:
        """Mark jobs running (attempt, start time). Jobs settled through ATOMIC_SETTLE skip
        this: their running state is read off the message's live lease."""

    @abstractmethod
    async def record_outcomes(
        self, settlements: Sequence[Settlement], *, starts: Sequence[JobStart] = ()
    ) -> None:
        """Store each job's outcome: status, attempts, result or error, times.

        A finished job's record expires ``result_ttl`` seconds after this. ``starts`` are
        other jobs' attempts that began, recorded first in the same round trip, so that a
        worker settling a batch pays one exchange with the store, not two.
        """

    @abstractmethod
    async def requeued(self, job_ids: Sequence[str]) -> None:
        """Jobs sent to run again (dead letters replayed) are queued once more."""

    @abstractmethod
    async def set_progress(self, job_id: str, progress: object) -> None:
        """Store a running job's progress (any JSON value). Raises JobNotFound."""

    @abstractmethod
    async def cancel_job(self, job_id: str) -> bool:
        """Mark a job that has not started cancelled: True if it was, False if too late.

        A worker that receives a cancelled job acknowledges it without running it.
        """

    @abstractmethod
    async def cancelled(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these jobs were cancelled (asked once per batch a worker receives)."""

    @abstractmethod
    async def succeeded_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of these idempotency keys belong to a job that already succeeded."""

    @abstractmethod
    async def list_jobs(self, query: JobQuery) -> JobPage:
        """Kept job records that match ``query``, newest update first, with the total.

        For people looking at a store (what runs, what failed): it may read every kept
        record that ``since`` lets through.
        """

    @abstractmethod
    async def job_stats(
        self, *, since: float | None = None, buckets: Sequence[float] = DURATION_BUCKETS
    ) -> list[TaskStats]:
        """Per task, sorted by name: the kept job records by status and a histogram of how
        long finished jobs ran (see TaskStats), with ``buckets`` as its upper bounds.

        ``since`` (epoch seconds) counts only records updated at or after it. For metrics
        and health checks: it may read every kept record, so cache what it returns.
        """

    # coordination between worker processes

    @abstractmethod
    async def acquire_rate(self, key: str, *, per_second: float, burst: int) -> float:
        """Take one token from a bucket shared by every process; 0.0 if taken, else the
        seconds until one frees up (nothing taken)."""

    @abstractmethod
    async def heartbeat(self, worker: WorkerInfo) -> None:
        """Record a worker as alive now."""

    @abstractmethod
    async def list_workers(self) -> list[WorkerInfo]: ...

    @abstractmethod
    async def forget_worker(self, worker_id: str) -> None: ...

    # queue history, for charts that outlive a server and agree between servers

    @abstractmethod
    async def record_samples(
        self,
        samples: Sequence[QueueSample],
        *,
        interval: float = SAMPLE_INTERVAL,
        retention: float = SAMPLE_RETENTION,
    ) -> None:
        """Keep queue figures for every server on this store to draw.

        At most one sample per queue per ``interval``-long slot of time is kept, the first
        recorded, so several servers sampling on their own clocks add no duplicates and
        never interleave inside a series. Samples older than ``retention`` seconds before
        the newest recorded are dropped, and at most ``Sampling.limit`` per queue are kept.
        Times are kept to the millisecond. One transaction (one round trip) per call.
        """

    @abstractmethod
    async def samples(
        self, *, since: float, queues: Sequence[str] | None = None
    ) -> dict[str, list[QueueSample]]:
        """Kept samples taken at or after ``since``, oldest first, by queue (only those of
        ``queues`` when given); a queue without any is left out."""
