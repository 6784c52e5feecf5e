"""Job: a handle on one enqueued task call, to follow its status and collect its result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.brokers.results import ResultStore
from conveyor.brokers.types import JobRecord, JobStatus
from conveyor.errors import JobFailed, ResultTimeout

if TYPE_CHECKING:
    from conveyor.tasks.host import JobHost


class Job:
    """The last known state of a job; ``refresh``/``arefresh`` ask the broker again."""

    def __init__(self, app: JobHost, record: JobRecord) -> None:
        self.app = app
        self.record = record

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.record.task} {self.status.value}>"

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def status(self) -> JobStatus:
        return self.record.status

    @property
    def attempts(self) -> int:
        return self.record.attempts

    @property
    def error(self) -> Any:
        return self.record.error

    @property
    def progress(self) -> Any:
        return self.record.progress

    async def arefresh(self) -> Job:
        self.record = await (await self.app.aresults()).get_job(self.id)
        return self

    def refresh(self) -> Job:
        self.record = self.app.call_states(lambda states: states.results.get_job(self.id))
        return self

    async def aresult(self, timeout: float | None = None) -> Any:
        """Wait for the job to finish; its result, or JobFailed. ResultTimeout after ``timeout``."""
        results = await self.app.aresults()
        self.record = await _wait(results, self.id, timeout)
        return self._outcome(timeout)

    def result(self, timeout: float | None = None) -> Any:
        """Blocking ``aresult``, for code without an event loop."""
        self.record = self.app.call_states(lambda states: _wait(states.results, self.id, timeout))
        return self._outcome(timeout)

    def _outcome(self, timeout: float | None) -> Any:
        if not self.status.finished:
            raise ResultTimeout(self.id, timeout or 0.0)
        if self.status is JobStatus.SUCCEEDED:
            return self.record.result
        raise JobFailed(self.id, dict(self.record.error or {"type": self.status.value}))

    async def acancel(self) -> bool:
        """Cancel the job if it has not started; False if it is running or finished."""
        cancelled = await (await self.app.aresults()).cancel_job(self.id)
        await self.arefresh()
        return cancelled

    def cancel(self) -> bool:
        cancelled = self.app.call_states(lambda states: states.results.cancel_job(self.id))
        self.refresh()
        return cancelled


async def _wait(results: ResultStore, job_id: str, timeout: float | None) -> JobRecord:
    """The record once finished; without a timeout, however long that takes."""
    while True:
        record = await results.wait_for_job(job_id, 60.0 if timeout is None else timeout)
        if record.status.finished or timeout is not None:
            return record
