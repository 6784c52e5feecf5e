"""The embedded broker's own ResultStore: job records in the same file as the messages.

For jobs the embedded broker carries, ``EmbeddedBroker.submit_jobs`` and ``settle`` write
these records in the message's own transaction and ``running`` is read off the live lease;
used as the results of another broker, the same tables hold records with no message row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor.brokers.embedded import history, jobs, metrics
from conveyor.brokers.embedded.rows import now_ms
from conveyor.brokers.results import (
    SAMPLE_INTERVAL,
    SAMPLE_RETENTION,
    JobStart,
    ResultStore,
    Sampling,
)
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
    check_buckets,
)

if TYPE_CHECKING:
    from conveyor.brokers.embedded import EmbeddedBroker


class EmbeddedResults(ResultStore):
    """Shares the broker's connection: opening or closing one opens or closes both."""

    scheme = "sqlite"

    def __init__(self, broker: EmbeddedBroker) -> None:
        super().__init__(broker.url)
        self.broker = broker

    async def connect(self) -> None:
        await self.broker.connect()

    async def close(self) -> None:
        await self.broker.close()

    async def ping(self) -> None:
        await self.broker.ping()

    async def create_jobs(self, submissions: Sequence[JobSubmission]) -> list[JobRecord]:
        return await self.broker._write(lambda c, t, _: jobs.create(c, submissions, now_ms()))

    async def discard_jobs(self, job_ids: Sequence[str]) -> None:
        await self.broker._write(lambda c, t, _: jobs.discard(c, job_ids))

    async def get_job(self, job_id: str) -> JobRecord:
        return await self.broker._read(lambda c, t: jobs.get(c, job_id, now_ms()))

    async def record_starts(self, starts: Sequence[JobStart]) -> None:
        if starts:
            await self.broker._write(lambda c, t, _: jobs.record_starts(c, starts, now_ms()))

    async def record_outcomes(
        self, settlements: Sequence[Settlement], *, starts: Sequence[JobStart] = ()
    ) -> None:
        if settlements or starts:
            await self.broker._write(lambda c, t, _: _record(c, starts, settlements, now_ms()))

    async def requeued(self, job_ids: Sequence[str]) -> None:
        moved = dict.fromkeys(job_ids)
        await self.broker._write(lambda c, t, _: jobs.requeued(c, moved, now_ms()))

    async def set_progress(self, job_id: str, progress: object) -> None:
        await self.broker._write(lambda c, t, _: jobs.set_progress(c, job_id, progress, now_ms()))

    async def cancel_job(self, job_id: str) -> bool:
        return await self.broker._write(lambda c, t, _: jobs.cancel(c, t, job_id, now_ms()))

    async def cancelled(self, job_ids: Sequence[str]) -> set[str]:
        if not job_ids:
            return set()
        return await self.broker._read(lambda c, t: jobs.cancelled(c, job_ids))

    async def succeeded_keys(self, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        return await self.broker._read(lambda c, t: jobs.succeeded_keys(c, keys))

    async def list_jobs(self, query: JobQuery) -> JobPage:
        return await self.broker._read(lambda c, t: jobs.listing(c, query, now_ms()))

    async def job_stats(
        self, *, since: float | None = None, buckets: Sequence[float] = DURATION_BUCKETS
    ) -> list[TaskStats]:
        bounds = check_buckets(buckets)
        since_ms = 0 if since is None else int(since * 1000)
        return await self.broker._read(
            lambda c, t: metrics.job_stats(c, now_ms(), since_ms, bounds)
        )

    async def acquire_rate(self, key: str, *, per_second: float, burst: int) -> float:
        return await self.broker._write(
            lambda c, t, _: jobs.acquire_rate(c, key, per_second, burst, now_ms())
        )

    async def heartbeat(self, worker: WorkerInfo) -> None:
        await self.broker._write(lambda c, t, _: jobs.heartbeat(c, worker, now_ms()))

    async def list_workers(self) -> list[WorkerInfo]:
        return await self.broker._read(lambda c, t: jobs.list_workers(c))

    async def forget_worker(self, worker_id: str) -> None:
        await self.broker._write(
            lambda c, t, _: c.execute("DELETE FROM workers WHERE id = ?", (worker_id,))
        )

    async def record_samples(
        self,
        samples: Sequence[QueueSample],
        *,
        interval: float = SAMPLE_INTERVAL,
        retention: float = SAMPLE_RETENTION,
    ) -> None:
        sampling = Sampling.of(interval, retention)
        if samples:
            await self.broker._write(lambda c, t, _: history.record(c, samples, sampling))

    async def samples(
        self, *, since: float, queues: Sequence[str] | None = None
    ) -> dict[str, list[QueueSample]]:
        if queues is not None and not queues:
            return {}
        since_ms = round(since * 1000)
        return await self.broker._read(lambda c, t: history.read(c, since_ms, queues))


def _record(
    connection: sqlite3.Connection,
    starts: Sequence[JobStart],
    settlements: Sequence[Settlement],
    now: int,
) -> None:
    jobs.record_starts(connection, starts, now)
    jobs.record_outcomes(connection, settlements, now)
