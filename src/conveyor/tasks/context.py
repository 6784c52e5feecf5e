"""What a running task can know and say about itself: its job id, attempt, and progress."""

from __future__ import annotations

import asyncio
import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from conveyor.brokers.types import Delivery
from conveyor.codecs import to_json
from conveyor.errors import ConveyorError

if TYPE_CHECKING:
    from conveyor.tasks.host import JobRunner

# What the worker sets per job: just (worker, delivery). The JobContext is built only when
# task code asks for it, so jobs that never ask cost no object.
current_job: ContextVar[tuple[JobRunner, Delivery] | None] = ContextVar(
    "conveyor_current_job", default=None
)


class JobContext:
    """Handed to task code through ``job_context()`` while a worker runs it."""

    __slots__ = ("_loop", "_loop_thread", "_worker", "attempt", "job_id", "queue")

    def __init__(self, worker: JobRunner, delivery: Delivery) -> None:
        self.job_id = delivery.message.id
        self.attempt = delivery.delivery_count
        self.queue = delivery.queue
        self._worker = worker
        self._loop = worker.event_loop
        self._loop_thread = worker.loop_thread

    async def aset_progress(self, progress: Any) -> None:
        """Store progress (any JSON value) for ``Job.progress`` to show."""
        results = await self._worker.app.aresults()
        await results.set_progress(self.job_id, to_json(progress))

    def set_progress(self, progress: Any) -> None:
        """``aset_progress`` for sync tasks, which run in worker threads."""
        if threading.get_ident() == self._loop_thread:
            raise ConveyorError("in an async task, use `await job_context().aset_progress(...)`")
        asyncio.run_coroutine_threadsafe(self.aset_progress(progress), self._loop).result()


def job_context() -> JobContext:
    """The job the calling task code is running as; only valid inside a worker."""
    running = current_job.get()
    if running is None:
        raise ConveyorError("job_context() is only available inside a task run by a worker")
    return JobContext(*running)
