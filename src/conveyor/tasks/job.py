"""Job: a handle on one enqueued task call, to follow its status and collect its result."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from conveyor.brokers.results import ResultStore
from conveyor.brokers.types import JobRecord, JobStatus
from conveyor.errors import JobFailed, ResultTimeout

if TYPE_CHECKING:
    from conveyor.tasks.host import JobHost


_WAITING = frozenset({JobStatus.SCHEDULED, JobStatus.RETRYING})


class Job:
    """A handle on one job. Reading ``status``, ``attempts``, ``error``, ``progress`` or
    ``next_attempt_at`` asks the store (as Celery's AsyncResult does), so a loop that polls
    ``job.status`` sees it change; ``record`` is the snapshot that read left behind.

    Those reads block; in async code, ``await job.arefresh()`` (or ``astatus()``) and read
    ``job.record``.
    """

    def __init__(self, app: JobHost, record: JobRecord) -> None:
        self.app = app
        self.record = record

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.record.task} {self.record.status.value}>"

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def status(self) -> JobStatus:
        return self.refresh().record.status

    async def astatus(self) -> JobStatus:
        return (await self.arefresh()).record.status

    @property
    def attempts(self) -> int:
        """Attempts started so far: 1 while the first one runs."""
        return self.refresh().record.attempts

    @property
    def error(self) -> Any:
        return self.refresh().record.error

    @property
    def progress(self) -> Any:
        return self.refresh().record.progress

    @property
    def next_attempt_at(self) -> float | None:
        """While the job waits to retry (or its delay), when its next attempt is due."""
        record = self.refresh().record
        return record.scheduled_for if record.status in _WAITING else None

    async def arefresh(self) -> Job:
        self.record = await (await self.app.aresults()).get_job(self.id)
        return self

    def refresh(self) -> Job:
        self.record = self.app.call_states(lambda states: states.results.get_job(self.id))
        return self

    async def aresult(self, timeout: float | None = None) -> Any:
        """Wait for the job to finish; its result, or JobFailed. ResultTimeout after ``timeout``."""
        results = await self.app.aresults()
        self.record, why = await _wait(results, self.id, timeout, self.app.broker_location)
        return self._outcome(timeout, why)

    def result(self, timeout: float | None = None) -> Any:
        """Blocking ``aresult``, for code without an event loop."""
        location = self.app.broker_location
        self.record, why = self.app.call_states(
            lambda states: _wait(states.results, self.id, timeout, location)
        )
        return self._outcome(timeout, why)

    def _outcome(self, timeout: float | None, why: str) -> Any:
        status = self.record.status
        if not status.finished:
            raise ResultTimeout(self.id, timeout or 0.0, why)
        if status is JobStatus.SUCCEEDED:
            return self.record.result
        raise JobFailed(self.id, dict(self.record.error or {"type": status.value}))

    async def acancel(self) -> bool:
        """Cancel the job if it has not started; False if it is running or finished."""
        cancelled = await (await self.app.aresults()).cancel_job(self.id)
        await self.arefresh()
        return cancelled

    def cancel(self) -> bool:
        cancelled = self.app.call_states(lambda states: states.results.cancel_job(self.id))
        self.refresh()
        return cancelled


async def _wait(
    results: ResultStore, job_id: str, timeout: float | None, location: str
) -> tuple[JobRecord, str]:
    """The record once finished (without a timeout, however long that takes); for one
    that is not, what the workers on that store say about why."""
    while True:
        record = await results.wait_for_job(job_id, 60.0 if timeout is None else timeout)
        if record.status.finished:
            return record, ""
        if timeout is not None:
            return record, await _unfinished(results, record, location)


async def _unfinished(results: ResultStore, record: JobRecord, location: str) -> str:
    """Whether a live worker consumes the job's queue on the broker the caller uses."""
    now = time.time()
    live = [worker for worker in await results.list_workers() if not worker.lost(now)]
    queue = record.queue
    consuming = [worker.id for worker in live if queue in worker.queues]
    where = f"on {location}"
    if consuming:
        shown = ", ".join(consuming[:3]) + (" ..." if len(consuming) > 3 else "")
        return (
            f"it is {record.status.value}; {len(consuming)} worker(s) {where} consume "
            f"queue {queue!r} ({shown}): wait longer, or add workers"
        )
    if live:
        read = ", ".join(sorted({name for worker in live for name in worker.queues}))
        return (
            f"it is {record.status.value}, and no worker {where} consumes queue {queue!r} "
            f"(the live workers read {read}): start one that does, e.g. conveyor worker "
            f"MODULE:APP --queues {queue}"
        )
    return (
        f"it is {record.status.value}, and no worker is running {where}: start one with "
        "conveyor worker MODULE:APP, on the same broker URL (a relative sqlite:/// path "
        "depends on the working directory)"
    )
