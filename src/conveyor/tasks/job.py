"""Job: a handle on one enqueued task call, to follow its status and collect its result."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from conveyor.brokers.types import JobRecord, JobStatus
from conveyor.errors import JobFailed, ResultTimeout

if TYPE_CHECKING:
    from conveyor.app import App


class Job:
    """The last known state of a job; ``refresh``/``arefresh`` ask the broker again."""

    def __init__(self, app: App, record: JobRecord) -> None:
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
        self.record = await (await self.app.abroker()).get_job(self.id)
        return self

    def refresh(self) -> Job:
        self.record = self.app.call_sync(lambda broker: broker.get_job(self.id))
        return self

    async def aresult(self, timeout: float | None = None) -> Any:
        """Wait for the job to finish; its result, or JobFailed. ResultTimeout after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while not (await self.arefresh()).status.finished:
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(self.id, timeout or 0.0)
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, 0.25)
        return self._outcome()

    def result(self, timeout: float | None = None) -> Any:
        """Blocking ``aresult``, for code without an event loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while not self.refresh().status.finished:
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(self.id, timeout or 0.0)
            time.sleep(pause)
            pause = min(pause * 1.5, 0.25)
        return self._outcome()

    def _outcome(self) -> Any:
        if self.status is JobStatus.SUCCEEDED:
            return self.record.result
        raise JobFailed(self.id, dict(self.record.error or {"type": self.status.value}))

    async def acancel(self) -> bool:
        """Cancel the job if it has not started; False if it is running or finished."""
        cancelled = await (await self.app.abroker()).cancel_job(self.id)
        await self.arefresh()
        return cancelled

    def cancel(self) -> bool:
        cancelled = self.app.call_sync(lambda broker: broker.cancel_job(self.id))
        self.refresh()
        return cancelled
