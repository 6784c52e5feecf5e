"""The worker: lease jobs, run them, settle each as succeeded, retrying, dead or failed.

These are the core semantics, not middleware, because correctness depends on them:
- a job is acknowledged only after it ran and its outcome is stored (at-least-once);
- a retry is a requeue with a delay: no worker ever sleeps on a failed job;
- a job delivered more often than its retries allow (its workers crashed) is dead-lettered;
- undecodable messages and unknown tasks are dead-lettered with the reason, and the worker
  keeps going.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from conveyor.app import App
from conveyor.brokers.base import Broker
from conveyor.brokers.capabilities import Capability
from conveyor.brokers.results import JobStart, ResultStore
from conveyor.brokers.types import Delivery, JobStatus, Settlement, WorkerInfo
from conveyor.codecs import loads, to_json
from conveyor.errors import ConveyorError, PermanentError, TaskTimeout, TopicNotFound
from conveyor.events.subscriber import Subscriber
from conveyor.tasks.context import current_job
from conveyor.tasks.schedules import run_schedules
from conveyor.tasks.states import JobStates
from conveyor.tasks.task import IDEMPOTENCY_HEADER, TASK_HEADER, Executor, Task
from conveyor.version import __version__
from conveyor.worker import reporting
from conveyor.worker.executors import ProcessRunner, ThreadRunner, describe
from conveyor.worker.reporting import FailureReason, failure

log = logging.getLogger("conveyor.worker")

_FAILED = frozenset({JobStatus.DEAD, JobStatus.FAILED, JobStatus.RETRYING})


@dataclass(slots=True)
class _Job:
    """A delivery on its way through this worker."""

    delivery: Delivery
    task: Task[Any, Any] | None = None
    started_at: float = 0.0
    started_monotonic: float = 0.0
    elapsed: float = 0.0
    settlement: Settlement | None = None


@dataclass(slots=True)
class WorkerCounts:
    """What a worker did: jobs settled, of which failed (retrying, failed or dead), and
    outcomes that could not be stored because the job's lease had lapsed."""

    processed: int = 0
    failed: int = 0
    lost_leases: int = 0


@dataclass
class Worker:
    """Runs an App's tasks from ``queues`` (strict priority: earlier queues first).

    Args:
        concurrency: jobs running at once (threads for sync tasks, tasks for async ones).
        prefetch: jobs leased ahead of those running (default 4 x concurrency).
        processes: child processes for ``executor="process"`` tasks (default: cores).
        grace: seconds a graceful stop waits for running jobs before releasing them.
    """

    app: App
    queues: Sequence[str] = ()
    concurrency: int = 8
    prefetch: int | None = None
    processes: int | None = None
    grace: float = 30.0
    heartbeat_interval: float = 5.0
    summary_interval: float = 60.0
    """Seconds between the INFO lines that sum up what the worker did (none while idle)."""
    subscriber_retry_interval: float = 30.0
    """Seconds between attempts to start a subscriber whose topic does not exist."""
    id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    counts: WorkerCounts = field(default_factory=WorkerCounts)

    def __post_init__(self) -> None:
        # Queues given are read in strict priority order; the app's own are taken in turn.
        self._in_turn = not self.queues
        self.queues = tuple(self.queues) or self.app.task_queues()
        self._order = self.queues
        if self.concurrency < 1:
            raise ConveyorError(f"concurrency must be at least 1, not {self.concurrency}")
        self.prefetch = self.prefetch or 4 * self.concurrency
        self._ready: deque[_Job] = deque()
        self._work = asyncio.Event()
        self._space = asyncio.Event()
        self._running: dict[int, _Job] = {}
        self._finished: list[Settlement] = []
        self._finished_event = asyncio.Event()
        self._stopping = asyncio.Event()
        self._aborting = False
        self._random = random.Random()
        self._threads = ThreadRunner(self.concurrency)
        self._processes = ProcessRunner(self.processes or os.cpu_count() or 1)
        self._started_at = time.time()
        self._broker: Broker | None = None
        self._starts: list[JobStart] = []
        self._failure: BaseException | None = None
        self._unstarted: list[Delivery] = []
        self._settling = 0
        self._thread_stop = threading.Event()

    # lifecycle

    def stop(self, *, graceful: bool = True) -> None:
        """Stop taking work; a second call, or ``graceful=False``, releases leases at once."""
        if self._stopping.is_set() or not graceful:
            self._aborting = True
        self._stopping.set()
        self._thread_stop.set()
        self._work.set()
        self._space.set()

    async def run(self, *, until_idle: bool = False) -> WorkerCounts:
        """Work until ``stop()``, or with ``until_idle`` until every queue is empty."""
        broker = await self.app.abroker()
        if Capability.QUEUES not in broker.capabilities:
            await self._run_subscribers(broker, until_idle)
            return self.counts
        states = self._states = await self.app.astates()
        broker = self._broker = states.broker
        self.event_loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        for queue in self.queues:
            await self.app.ensure_queue(broker, queue)
        self._log_start(until_idle)
        helpers: list[asyncio.Task[Any]] = [
            asyncio.create_task(self._heartbeats(states.results)),
            asyncio.create_task(self._summaries()),
            asyncio.create_task(self._settle_finished(states)),
            *(asyncio.create_task(self._slot()) for _ in range(self.concurrency)),
        ]
        if Capability.LEASE_EXTENSION in broker.capabilities:
            helpers.append(asyncio.create_task(self._extend_leases(broker)))
        if self.app.schedules and not until_idle:
            helpers.append(asyncio.create_task(run_schedules(self.app, states, self._stopping)))
        if not until_idle:
            helpers.extend(
                asyncio.create_task(self._subscribe(subscriber, broker))
                for subscriber in self.app.subscribers.values()
            )
        for helper in helpers:
            helper.add_done_callback(self._helper_done)
        try:
            await self._fetch_until_stopped(broker, until_idle)
            await self._wind_down(states)
            if self._failure is not None:
                raise self._failure
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._flush(states)
            with contextlib.suppress(ConveyorError):
                await states.results.forget_worker(self.id)
            self._threads.close()
            self._processes.close()
        return self.counts

    async def _run_subscribers(self, broker: Broker, until_idle: bool) -> None:
        """The worker of an App on a broker without queues (kafka://): its subscribers
        only, and no job records, so no worker heartbeats unless it has a result store."""
        log.info(
            "conveyor %s worker %s on %s: no queues (the broker has none)%s",
            __version__,
            self.id,
            self.app.broker_location,
            "".join(
                f"; subscriber {s.name} on {s.options.topic}" for s in self.app.subscribers.values()
            ),
        )
        if until_idle:
            return
        helpers = [
            asyncio.create_task(self._subscribe(subscriber, broker))
            for subscriber in self.app.subscribers.values()
        ]
        heartbeats = None
        if self.app.has_results(broker):
            results = (await self.app.astates()).results
            heartbeats = asyncio.create_task(self._heartbeats(results))
        for helper in helpers:
            helper.add_done_callback(self._helper_done)
        try:
            await self._stopping.wait()
        finally:
            if heartbeats is not None:
                heartbeats.cancel()
            await asyncio.gather(*helpers, *filter(None, [heartbeats]), return_exceptions=True)
        if self._failure is not None:
            raise self._failure

    def _log_start(self, until_idle: bool) -> None:
        order = "in turn" if self._in_turn else "in priority order"
        subscribers = [] if until_idle else list(self.app.subscribers.values())
        log.info(
            "conveyor %s worker %s on %s: queues %s (%s), concurrency %d, prefetch %d; tasks: %s%s",
            __version__,
            self.id,
            self.app.broker_location,
            ", ".join(self.queues),
            order,
            self.concurrency,
            self.prefetch,
            ", ".join(sorted(self.app.tasks)) or "none",
            "".join(f"; subscriber {sub.name} on {sub.options.topic}" for sub in subscribers),
        )

    async def run_until_idle(self) -> WorkerCounts:
        """Drain the queues through the real worker code, then return (for tests, scripts)."""
        return await self.run(until_idle=True)

    def _helper_done(self, helper: asyncio.Task[Any]) -> None:
        """A helper that fails stops the worker, and ``run`` raises its error."""
        if not helper.cancelled() and helper.exception() is not None and self._failure is None:
            self._failure = helper.exception()
            self.stop(graceful=False)

    # fetching

    async def _fetch_until_stopped(self, broker: Broker, until_idle: bool) -> None:
        assert self.prefetch is not None
        while not self._stopping.is_set():
            # Outcomes not yet settled still hold their leases: prefetch bounds them too.
            held = len(self._ready) + len(self._running) + len(self._finished) + self._settling
            room = self.prefetch - held
            if room <= 0:
                self._space.clear()
                await self._space.wait()
                continue
            wait = 0.0 if until_idle else 1.0
            deliveries = await self._fetch(broker, room, wait)
            if deliveries and not self._states.atomic:
                deliveries = await self._without_cancelled(deliveries)
            if deliveries:
                self._ready.extend(_Job(delivery) for delivery in deliveries)
                self._work.set()
            elif until_idle and await self._idle(broker):
                return
            elif until_idle:
                await asyncio.sleep(0.005)

    async def _fetch(self, broker: Broker, room: int, wait: float) -> list[Delivery]:
        """Queues in their order first (what is ready now), then a wait on all of them.

        Queues given to the worker keep their order (strict priority); the app's own
        queues start from the next one at each fetch, so a busy one starves none.

        One queue has no order to keep, so a worker that may wait goes straight to the
        waiting receive: on an engine that pushes (RabbitMQ), a receive that must not
        wait is a round trip per call, where a waiting one takes what was pushed.
        """
        lease = self.app.lease_timeout
        order = self._order
        if self._in_turn and len(order) > 1:
            order = self._order = (*order[1:], order[0])
        if wait <= 0 or len(order) > 1:
            for queue in order:
                deliveries = await broker.receive(queue, max_messages=room, lease_timeout=lease)
                if deliveries:
                    return deliveries
        if wait <= 0:
            return []
        waits = [
            asyncio.create_task(
                broker.receive(queue, max_messages=room, lease_timeout=lease, wait=wait)
            )
            for queue in self.queues
        ]
        stop = asyncio.create_task(self._stopping.wait())
        await asyncio.wait([*waits, stop], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        for waiting in waits:
            waiting.cancel()
        results = await asyncio.gather(*waits, return_exceptions=True)
        return [d for result in results if isinstance(result, list) for d in result]

    async def _without_cancelled(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Settle jobs cancelled while queued (where the broker could not remove them)."""
        ids = [delivery.message.id for delivery in deliveries]
        cancelled = await self._states.results.cancelled(ids)
        if not cancelled:
            return deliveries
        now = time.time()
        self._finish(
            [
                Settlement(delivery, JobStatus.CANCELLED, now, self.id)
                for delivery in deliveries
                if delivery.message.id in cancelled
            ]
        )
        return [delivery for delivery in deliveries if delivery.message.id not in cancelled]

    async def _idle(self, broker: Broker) -> bool:
        if self._ready or self._running or self._finished:
            return False
        for queue in self.queues:
            if (await broker.queue_stats(queue)).at_least:
                return False
        return True

    # running

    async def _slot(self) -> None:
        """One unit of concurrency: takes jobs (several when they pile up) and runs them."""
        while True:
            while not self._ready:
                self._work.clear()
                await self._work.wait()
                if self._stopping.is_set():
                    return
            share = max(1, len(self._ready) // self.concurrency)
            chunk = [self._ready.popleft() for _ in range(min(share, len(self._ready)))]
            for job in chunk:
                self._running[job.delivery.tag] = job
            try:
                await self._run_chunk(chunk)
            finally:
                now = time.time()
                settled: list[Settlement] = []
                for job in chunk:
                    self._running.pop(job.delivery.tag, None)
                    if job.settlement is not None:
                        settled.append(job.settlement)
                    elif not job.started_monotonic and not job.delivery.lease_lapsed(now):
                        self._unstarted.append(job.delivery)
                self._finish(settled)
                self._space.set()

    async def _run_chunk(self, chunk: list[_Job]) -> None:
        """Run a chunk in order; once stopping, jobs not yet started are left to be released.

        A job whose lease lapsed while it waited is skipped: the queue may have given it to
        another worker already.
        """
        threaded: list[tuple[_Job, tuple[Any, ...], dict[str, Any]]] = []
        atomic = self._states.atomic
        for job in chunk:
            if self._stopping.is_set():
                break
            if job.delivery.lease_lapsed(time.time()):
                continue
            headers = job.delivery.message.headers
            call = self._prepare(job)
            if call is None:
                continue
            task, args, kwargs = call
            if (task.options.rate_limit is not None or IDEMPOTENCY_HEADER in headers) and not (
                await self._admit(job, task)
            ):
                continue
            if not atomic:
                delivery = job.delivery
                self._starts.append(
                    JobStart(
                        delivery.message.id,
                        delivery.delivery_count,
                        time.time(),
                        self.id,
                        delivery.tag,
                    )
                )
                self._finished_event.set()
            if task.options.executor is Executor.THREAD:
                threaded.append((job, args, kwargs))
            else:
                await self._run_one(job, task, args, kwargs)
        if threaded:
            await self._run_threaded(threaded)

    def _prepare(self, job: _Job) -> tuple[Task[Any, Any], tuple[Any, ...], dict[str, Any]] | None:
        """Find the task and decode the arguments, or settle the job as dead right away."""
        headers = job.delivery.message.headers
        task = self.app.tasks.get(headers.get(TASK_HEADER, ""))
        if task is None:
            known = ", ".join(sorted(self.app.tasks)) or "none"
            job.settlement = self._dead(
                job,
                PermanentError(f"unknown task {headers.get(TASK_HEADER)!r}; known: {known}"),
                FailureReason.PERMANENT,
                "no such task in this worker's app",
            )
            return None
        job.task = task
        allowed = task.options.retry.max_retries + 1
        if job.delivery.delivery_count > allowed:
            error = PermanentError(
                f"delivered {job.delivery.delivery_count} times, {allowed} allowed: earlier "
                "attempts were lost with their worker (crash or lapsed lease)"
            )
            job.settlement = self._dead(
                job, error, FailureReason.DELIVERY_LIMIT, "earlier attempts lost with their worker"
            )
            return None
        try:
            args, kwargs = task.codec.decode(loads(job.delivery.message.body))
        except ConveyorError as error:
            job.settlement = self._dead(
                job, error, FailureReason.PERMANENT, "its arguments cannot be decoded"
            )
            return None
        return task, args, kwargs

    async def _admit(self, job: _Job, task: Task[Any, Any]) -> bool:
        """Skip a job whose idempotency key already succeeded; wait out the rate limit."""
        key = job.delivery.message.headers.get(IDEMPOTENCY_HEADER)
        results = self._states.results
        if key is not None and key in await results.succeeded_keys([key]):
            job.settlement = self._settlement(job, JobStatus.SUCCEEDED)
            return False
        await self._respect_rate_limit(task)
        return True

    async def _respect_rate_limit(self, task: Task[Any, Any]) -> None:
        limit = task.options.rate_limit
        if limit is None:
            return
        while (
            pause := await self._states.results.acquire_rate(
                f"task:{task.name}", per_second=limit.per_second, burst=limit.count
            )
        ) > 0:
            await asyncio.sleep(pause)

    async def _run_one(
        self, job: _Job, task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        timeout = task.options.timeout
        job.started_at, job.started_monotonic = time.time(), time.monotonic()
        token = current_job.set((self, job.delivery))
        try:
            if task.options.executor is Executor.PROCESS:
                payload = loads(job.delivery.message.body)
                function = task.function
                result = await self._processes.run(
                    function.__module__, function.__qualname__, payload, timeout, task.name
                )
            else:
                async with asyncio.timeout(timeout):
                    result = await task.function(*args, **kwargs)
        except TimeoutError:
            job.settlement = self._failed(job, TaskTimeout(task.name, timeout or 0.0))
        except Exception as error:
            job.settlement = self._failed(job, error)
        else:
            job.settlement = self._succeeded(job, result)
        finally:
            current_job.reset(token)

    async def _run_threaded(
        self, calls: list[tuple[_Job, tuple[Any, ...], dict[str, Any]]]
    ) -> None:
        bound: list[Callable[[], Any]] = []
        for job, args, kwargs in calls:
            assert job.task is not None
            bound.append(_bind(job, (self, job.delivery), job.task.function, args, kwargs))
        outcomes = await self._threads.run_chunk(bound, self._thread_stop)
        for (job, _, _), (succeeded, value) in zip(calls, outcomes, strict=False):
            assert job.task is not None
            if value is _NOT_STARTED:
                continue
            timeout = job.task.options.timeout
            if timeout is not None and job.elapsed > timeout:
                job.settlement = self._failed(job, TaskTimeout(job.task.name, timeout))
            elif succeeded:
                job.settlement = self._succeeded(job, value)
            else:
                job.settlement = self._failed(job, value)

    # outcomes

    def _succeeded(self, job: _Job, result: Any) -> Settlement:
        try:
            value = to_json(result)
        except ConveyorError as error:
            return self._dead(job, error, FailureReason.PERMANENT, "its result is not JSON")
        if log.isEnabledFor(logging.DEBUG):
            reporting.succeeded(job.delivery, time.monotonic() - job.started_monotonic)
        return self._settlement(job, JobStatus.SUCCEEDED, result=value)

    def _failed(self, job: _Job, error: BaseException) -> Settlement:
        assert job.task is not None
        options = job.task.options
        decision = options.retry.decide(error, job.delivery.delivery_count, self._random)
        if decision.retry:
            reporting.retrying(job.delivery, error, decision.reason)
            return self._settlement(
                job, JobStatus.RETRYING, error=describe(error), retry_delay=decision.delay
            )
        reason = FailureReason.EXHAUSTED if decision.exhausted else FailureReason.PERMANENT
        if not options.dead_letter:
            reporting.gave_up(job.delivery, error, reason, decision.reason, dead_letter=False)
            return self._settlement(job, JobStatus.FAILED, error=failure(error, reason))
        return self._dead(job, error, reason, decision.reason)

    def _dead(
        self, job: _Job, error: BaseException, reason: FailureReason, detail: str
    ) -> Settlement:
        reporting.gave_up(job.delivery, error, reason, detail, dead_letter=True)
        return self._settlement(job, JobStatus.DEAD, error=failure(error, reason))

    def _settlement(
        self,
        job: _Job,
        status: JobStatus,
        result: Any = None,
        error: dict[str, Any] | None = None,
        retry_delay: float = 0.0,
    ) -> Settlement:
        started = job.started_at or time.time()
        return Settlement(job.delivery, status, started, self.id, result, error, retry_delay)

    def _finish(self, settled: list[Settlement]) -> None:
        self.counts.processed += len(settled)
        self.counts.failed += sum(settlement.status in _FAILED for settlement in settled)
        self._finished.extend(settled)
        self._finished_event.set()

    async def _settle_finished(self, states: JobStates) -> None:
        """Settle outcomes in batches: whatever finished while the last batch was stored."""
        while True:
            await self._finished_event.wait()
            await asyncio.sleep(0)
            await self._flush(states)

    async def _flush(self, states: JobStates) -> None:
        """Settle the finished jobs, recording the starts of those still running with them.

        A job that started and finished since the last flush needs only its outcome,
        which records the attempt's start too.
        """
        self._finished_event.clear()
        batch, self._finished = self._finished, []
        finished = {settlement.delivery.tag for settlement in batch}
        starts = [start for start in self._starts if start.tag not in finished]
        self._starts = []
        if not batch:
            await states.start(starts)
            return
        self._settling = len(batch)
        try:
            lost = await states.settle(batch, starts=starts)
        except BaseException:
            self._finished[:0] = batch  # settled by the final flush instead
            self._starts[:0] = starts
            raise
        finally:
            self._settling = 0
        self.counts.lost_leases += len(lost)
        self._space.set()

    # keeping leases and the registry alive

    async def _extend_leases(self, broker: Broker) -> None:
        """Hold the leases of prefetched and running jobs, but not past a task's timeout.

        A lease due within two thirds of the lease timeout is renewed; checking every third
        keeps every held lease alive for as long as this worker is.
        """
        lease = self.app.lease_timeout
        while True:
            await asyncio.sleep(lease / 3)
            now, soon = time.monotonic(), time.time() + lease * 2 / 3
            for job in [*self._ready, *self._running.values()]:
                timeout = job.task.options.timeout if job.task else None
                started = job.started_monotonic
                if timeout is not None and started and now - started > timeout:
                    continue
                deadline = job.delivery.lease_deadline
                if deadline is not None and deadline < soon and job.settlement is None:
                    with contextlib.suppress(ConveyorError):
                        job.delivery = await broker.extend_lease(job.delivery, lease)

    async def _heartbeats(self, results: ResultStore) -> None:
        while True:
            now = time.time()
            await results.heartbeat(
                WorkerInfo(
                    self.id,
                    socket.gethostname(),
                    os.getpid(),
                    tuple(self.queues),
                    self._started_at,
                    now,
                    running=len(self._running),
                    processed=self.counts.processed,
                    failed=self.counts.failed,
                    concurrency=self.concurrency,
                )
            )
            await asyncio.sleep(self.heartbeat_interval)

    async def _subscribe(self, subscriber: Subscriber, broker: Broker) -> None:
        """Run a subscriber; one whose topic does not exist waits for it, saying so, and
        never stops the worker's other work."""
        while not self._stopping.is_set():
            try:
                await subscriber.run(
                    broker, self._stopping, auto_create_topics=self.app.auto_create_topics
                )
                return
            except TopicNotFound as error:
                log.error(
                    "subscriber %s cannot start: %s; trying again in %g s",
                    subscriber.name,
                    error,
                    self.subscriber_retry_interval,
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.subscriber_retry_interval):
                        await self._stopping.wait()

    async def _summaries(self) -> None:
        counts = self.counts
        processed, failed = counts.processed, counts.failed
        while True:
            await asyncio.sleep(self.summary_interval)
            done, failures = counts.processed - processed, counts.failed - failed
            processed, failed = counts.processed, counts.failed
            if done:
                reporting.summary(
                    done, failures, self.summary_interval, len(self._running), len(self._ready)
                )

    async def _wind_down(self, states: JobStates) -> None:
        """Give back what has not started; let started jobs finish within the grace period."""
        broker = states.broker
        waiting = [job.delivery for job in self._ready]
        self._ready.clear()
        await broker.release(waiting)
        deadline = time.monotonic() + (0.0 if self._aborting else self.grace)
        while self._started_and_unsettled() and time.monotonic() < deadline:
            if self._aborting:
                break
            await asyncio.sleep(0.01)
        await self._flush(states)
        unstarted = [j.delivery for j in self._running.values() if not j.started_monotonic]
        await broker.release(self._unstarted + unstarted)
        self._unstarted.clear()
        await _release(broker, [job.delivery for job in self._started_and_unsettled()])

    def _started_and_unsettled(self) -> list[_Job]:
        return [
            job
            for job in self._running.values()
            if job.started_monotonic and job.settlement is None
        ]


async def _release(broker: Broker, deliveries: Sequence[Delivery]) -> None:
    for delivery in deliveries:
        with contextlib.suppress(ConveyorError):
            await broker.nack(delivery, requeue=True)


_NOT_STARTED = object()


def _bind(
    job: _Job,
    context: tuple[Worker, Delivery],
    function: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Callable[[], Any]:
    """The call a worker thread makes; it times the call itself, not the chunk it is in.

    A job whose lease lapsed while it waited in the chunk (the process was paused, or the
    calls before it ran long) is not started: the queue may have given it to another worker.
    """

    def call() -> Any:
        if job.delivery.lease_lapsed(time.time()):
            return _NOT_STARTED
        job.started_at = time.time()
        job.started_monotonic = time.monotonic()
        token = current_job.set(context)
        try:
            return function(*args, **kwargs)
        finally:
            current_job.reset(token)
            job.elapsed = time.monotonic() - job.started_monotonic

    return call
