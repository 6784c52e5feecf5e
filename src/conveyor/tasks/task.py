"""Task: what ``@app.task`` makes of a function, and how a call becomes a job on a queue."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from conveyor.brokers.results import request_digest
from conveyor.brokers.types import JobSubmission, seconds
from conveyor.codecs import ArgumentCodec, dumps
from conveyor.errors import ConfigError
from conveyor.message import Message
from conveyor.names import check_name
from conveyor.retry import RetryPolicy, backoff_from

if TYPE_CHECKING:
    from conveyor.tasks.host import JobHost
    from conveyor.tasks.job import Job

P = ParamSpec("P")
R = TypeVar("R")

TASK_HEADER = "task"
IDEMPOTENCY_HEADER = "idempotency-key"
TASK_PRIORITIES = 9
"""Task queues are declared with priorities 0-9 (higher first), as RabbitMQ advises
(every level costs the server memory and CPU); a task's priority is checked against it."""


class Executor(StrEnum):
    """Where a task runs: on the worker's event loop, in its thread pool, or in a child
    process (for CPU-bound work, and a timeout that can kill)."""

    ASYNC = "async"
    THREAD = "thread"
    PROCESS = "process"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``count`` runs per ``period`` seconds, shared by every worker process."""

    count: int
    period: float

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*", text)
        if not match or int(match[1]) < 1:
            raise ConfigError(
                f"rate_limit {text!r} is not COUNT/UNIT; write e.g. '100/s', '10/m', '500/h'"
            )
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[3]]
        return cls(int(match[1]), unit * int(match[2] or 1))

    @property
    def per_second(self) -> float:
        return self.count / self.period


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """A task's options, checked once when the task is declared."""

    queue: str
    priority: int
    retry: RetryPolicy
    timeout: float | None
    executor: Executor
    idempotency_key: Callable[..., str] | None
    idempotency_window: float
    rate_limit: RateLimit | None
    dead_letter: bool
    result_ttl: float


def task_options(
    function: Callable[..., Any],
    *,
    queue: str,
    priority: int = 0,
    max_retries: int = 3,
    backoff: object = None,
    retry_on: Sequence[type[BaseException]] = (Exception,),
    dont_retry_on: Sequence[type[BaseException]] = (),
    timeout: float | timedelta | None = 300.0,
    executor: str | None = None,
    idempotency_key: Callable[..., str] | None = None,
    idempotency_window: float | timedelta = 3600.0,
    rate_limit: str | None = None,
    dead_letter: bool = True,
    result_ttl: float | timedelta = 86400.0,
) -> TaskOptions:
    """Validate a task's options; every mistake is a ConfigError raised at declaration."""
    check_name("queue", queue)
    check_priority(priority)
    if type(max_retries) is not int or max_retries < 0:
        raise ConfigError(f"max_retries must be an integer >= 0, not {max_retries!r}")
    is_async = inspect.iscoroutinefunction(function)
    chosen = Executor(executor) if executor else (Executor.ASYNC if is_async else Executor.THREAD)
    if is_async != (chosen is Executor.ASYNC):
        raise ConfigError(
            f"executor={chosen.value!r} does not fit {'an async' if is_async else 'a sync'} "
            "function; async def runs on the event loop, def in 'thread' or 'process'"
        )
    if idempotency_key is not None and not callable(idempotency_key):
        raise ConfigError("idempotency_key must be a function of the task's arguments")
    return TaskOptions(
        queue=queue,
        priority=priority,
        retry=RetryPolicy(
            max_retries=max_retries,
            backoff=backoff_from(backoff),
            retry_on=tuple(retry_on),
            dont_retry_on=tuple(dont_retry_on),
        ),
        timeout=seconds(timeout, "timeout", positive=True),
        executor=chosen,
        idempotency_key=idempotency_key,
        idempotency_window=seconds(idempotency_window, "idempotency_window") or 0.0,
        rate_limit=RateLimit.parse(rate_limit) if rate_limit else None,
        dead_letter=dead_letter,
        result_ttl=seconds(result_ttl, "result_ttl") or 0.0,
    )


TASK_OPTIONS = frozenset(inspect.signature(task_options).parameters) - {"function"}


class Task(Generic[P, R]):
    """A registered task. Call it to run it here; ``delay``/``send`` to run it on a worker."""

    def __init__(
        self, app: JobHost, name: str, function: Callable[P, R], options: TaskOptions
    ) -> None:
        self.app = app
        self.name = name
        self.function = function
        self.options = options
        self.codec = ArgumentCodec(name, function)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.options.queue}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.function(*args, **kwargs)

    def submission(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        idempotency_key: str | None = None,
    ) -> JobSubmission:
        """Validate a call and turn it into a job submission; nothing is sent yet."""
        payload = self.codec.encode(tuple(args), dict(kwargs or {}))
        wait = seconds(delay, "delay") or 0.0
        if eta is not None:
            if eta.tzinfo is None:
                raise ConfigError("eta must be timezone-aware, e.g. datetime.now(UTC) + ...")
            wait = max(wait, (eta - datetime.now(eta.tzinfo)).total_seconds())
        key = idempotency_key
        if key is None and self.options.idempotency_key is not None:
            key = self.options.idempotency_key(*args, **(kwargs or {}))
        headers: dict[str, Any] = {TASK_HEADER: self.name}
        if key is not None:
            headers[IDEMPOTENCY_HEADER] = key
        target = check_name("queue", queue) if queue else self.options.queue
        message = Message(
            dumps(payload),
            routing_key=target,
            headers=headers,
            priority=self.options.priority if priority is None else check_priority(priority),
            content_type="application/json",
        )
        return JobSubmission(
            message,
            queue=target,
            task=self.name,
            delay=max(wait, 0.0),
            idempotency_key=key,
            idempotency_window=self.options.idempotency_window,
            result_ttl=self.options.result_ttl,
            request_digest=None if key is None else request_digest(self.name, message.body),
        )

    async def asend(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Job:
        (job,) = await self.app.asubmit([self.submission(args, kwargs, **options)])
        return job

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        return await self.asend(args, kwargs)

    async def asend_many(
        self, calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]], **options: Any
    ) -> list[Job]:
        """Enqueue many calls in one step (one transaction on the embedded broker)."""
        return await self.app.asubmit([self.submission(a, k, **options) for a, k in calls])

    def send(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Job:
        """Enqueue one call from code without an event loop; returns its Job."""
        (job,) = self.app.submit([self.submission(args, kwargs, **options)])
        return job

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        return self.send(args, kwargs)

    def send_many(
        self, calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]], **options: Any
    ) -> list[Job]:
        return self.app.submit([self.submission(a, k, **options) for a, k in calls])


def check_priority(priority: object) -> int:
    if type(priority) is not int or not 0 <= priority <= TASK_PRIORITIES:
        raise ConfigError(
            f"a task's priority must be an integer 0-{TASK_PRIORITIES} (task queues have "
            f"{TASK_PRIORITIES + 1} levels, {TASK_PRIORITIES} runs first), not {priority!r}"
        )
    return priority
