"""What the task layer needs from the application that hosts it, stated as protocols.

``App`` and ``Worker`` satisfy these structurally; tasks/ never imports them, so the
dependency runs one way: app and worker build on tasks, not the reverse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from conveyor.brokers.base import Broker
from conveyor.brokers.results import ResultStore
from conveyor.brokers.types import JobSubmission

if TYPE_CHECKING:
    from conveyor.cron import Schedule
    from conveyor.tasks.job import Job
    from conveyor.tasks.states import JobStates
    from conveyor.tasks.task import Task

T = TypeVar("T")


class JobHost(Protocol):
    """Submits jobs and reaches their records, on an event loop or from blocking code."""

    @property
    def broker_location(self) -> str: ...

    async def asubmit(self, submissions: Sequence[JobSubmission]) -> list[Job]: ...

    def submit(self, submissions: Sequence[JobSubmission]) -> list[Job]: ...

    async def aresults(self) -> ResultStore: ...

    def call_states(self, call: Callable[[JobStates], Awaitable[T]]) -> T: ...


class ScheduleHost(Protocol):
    """Owns the periodic tasks and declares their queues."""

    @property
    def schedules(self) -> Sequence[tuple[Task[Any, Any], Schedule]]: ...

    async def ensure_queue(self, broker: Broker, queue: str) -> None: ...


class JobRunner(Protocol):
    """The worker running the current job: its loop, its thread, and its app."""

    @property
    def app(self) -> JobHost: ...

    @property
    def event_loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def loop_thread(self) -> int: ...
