"""App: the broker URL, the registry of tasks and schedules, and enqueueing.

No global app and no I/O at import: decorators only register; the broker opens on first
use. Async code uses the ``a``-prefixed methods on its own event loop; sync code (scripts,
Flask, Django) uses the plain ones, which run on a private background loop with a broker
connection of their own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar, overload

from conveyor._bridge import PortalBroker
from conveyor._portal import Portal
from conveyor.brokers import backends_with, declared_capabilities, open_broker, open_results
from conveyor.brokers.base import Broker
from conveyor.brokers.capabilities import Capability
from conveyor.brokers.results import ResultStore
from conveyor.brokers.stream_types import RecordMetadata, TopicConfig, TopicSpec
from conveyor.brokers.types import (
    JobPage,
    JobQuery,
    JobSubmission,
    QueueSpec,
    WorkerInfo,
    seconds,
)
from conveyor.cron import Schedule, parse_schedule
from conveyor.errors import ConfigError, NotSupported
from conveyor.events.consumer import OffsetReset, StreamConsumer, open_consumer
from conveyor.events.producer import Producer, Value, ensure_topics, record
from conveyor.events.subscriber import Handler, Subscriber, SubscriberOptions
from conveyor.names import check_name
from conveyor.retry import Exponential, RetryPolicy, backoff_from
from conveyor.settings import BrokerURL
from conveyor.tasks.dead_letters import DeadLetter, list_dead_letters
from conveyor.tasks.job import Job
from conveyor.tasks.states import JobStates, dead_letter_queue
from conveyor.tasks.task import TASK_OPTIONS, TASK_PRIORITIES, Task, task_options

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class App:
    """One application's tasks on one broker.

    Args:
        broker_url: ``sqlite:///path.db`` (default ``sqlite:///conveyor.db``), ``memory://``,
            ``amqp://user:password@host/vhost``...
        results_url: where job records and results live (``redis://host:6379/0``); by
            default the broker's own store, on backends that keep one.
        default_queue: queue for tasks that name none.
        auto_create_topics: producing to, consuming from or subscribing to a topic that
            does not exist creates it (one partition, default settings), as Kafka does by
            default; with False, that raises TopicNotFound naming ``conveyor topics create``.
        lease_timeout: seconds a worker holds a job before it is redelivered; workers
            extend it while a job runs, so it bounds how long a crashed worker's jobs wait.
    """

    def __init__(
        self,
        broker_url: str = "sqlite:///conveyor.db",
        *,
        results_url: str | None = None,
        default_queue: str = "default",
        lease_timeout: float | timedelta = 30.0,
        auto_create_topics: bool = True,
    ) -> None:
        self.broker_url = broker_url
        self.results_url = results_url
        self.default_queue = check_name("queue", default_queue)
        self.lease_timeout = seconds(lease_timeout, "lease_timeout", positive=True) or 30.0
        self.auto_create_topics = auto_create_topics
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: list[tuple[Task[Any, Any], Schedule]] = []
        self.subscribers: dict[str, Subscriber] = {}
        self._broker: Broker | None = None
        self._portal: Portal | None = None
        self._portal_broker: Broker | None = None
        self._states: JobStates | None = None
        self._portal_states: JobStates | None = None
        self._declared: dict[int, set[str]] = {}
        self._producer: Producer | None = None

    # registration

    @overload
    def task(self, function: F, /) -> Task[Any, Any]: ...
    @overload
    def task(
        self, function: None = None, /, *, name: str | None = None, **options: Any
    ) -> Callable[[F], Task[Any, Any]]: ...

    def task(
        self, function: F | None = None, /, *, name: str | None = None, **options: Any
    ) -> Task[Any, Any] | Callable[[F], Task[Any, Any]]:
        """Register a function (``def`` or ``async def``) as a task; see TaskOptions."""

        unknown = sorted(set(options) - TASK_OPTIONS)
        if unknown:
            valid = ", ".join(sorted(TASK_OPTIONS))
            raise ConfigError(f"unknown task option(s) {', '.join(unknown)}; valid: {valid}")

        if Capability.QUEUES not in declared_capabilities(self.broker_url):
            raise NotSupported(
                "tasks, which need queues (docs/backends.md: tasks and events on two brokers)",
                BrokerURL.parse(self.broker_url).scheme,
                backends_with(Capability.QUEUES),
            )

        def register(fn: F) -> Task[Any, Any]:
            task_name = name or f"{fn.__module__}.{fn.__qualname__}"
            if task_name in self.tasks:
                raise ConfigError(f"a task named {task_name!r} is already registered")
            options.setdefault("queue", self.default_queue)
            registered: Task[Any, Any] = Task(self, task_name, fn, task_options(fn, **options))
            self.tasks[task_name] = registered
            return registered

        return register(function) if function is not None else register

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: float | None = None,
        name: str | None = None,
        **options: Any,
    ) -> Callable[[F], Task[Any, Any]]:
        """Register a task that workers enqueue on a schedule, once per tick in all."""
        schedule = parse_schedule(cron, every)

        def register(fn: F) -> Task[Any, Any]:
            registered = self.task(name=name, **options)(fn)
            self.schedules.append((registered, schedule))
            return registered

        return register

    def subscriber(
        self,
        topic: str,
        *,
        group: str,
        name: str | None = None,
        max_retries: int = 3,
        backoff: object = None,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        dont_retry_on: tuple[type[BaseException], ...] = (),
        dead_letter_topic: str | None = None,
        auto_offset_reset: OffsetReset = "earliest",
        session_timeout: float = 10.0,
    ) -> Callable[[Handler], Subscriber]:
        """Register an event handler for ``topic``, fed by consumer group ``group``.

        Workers run it: each record is committed after the handler succeeds; failures are
        retried with ``backoff`` and then sent to ``dead_letter_topic`` (``<topic>.dlq``).
        """
        retry = RetryPolicy(
            max_retries,
            backoff_from(backoff) if backoff is not None else Exponential(),
            tuple(retry_on),
            tuple(dont_retry_on),
        )
        options = SubscriberOptions(
            topic,
            group,
            retry,
            dead_letter_topic or "",
            auto_offset_reset,
            seconds(session_timeout, "session_timeout", positive=True) or 10.0,
        )

        def register(fn: Handler) -> Subscriber:
            label = name or f"{fn.__module__}.{fn.__qualname__}"
            if label in self.subscribers:
                raise ConfigError(f"a subscriber named {label!r} is already registered")
            registered = self.subscribers[label] = Subscriber(label, fn, options)
            return registered

        return register

    def task_queues(self) -> tuple[str, ...]:
        """The default queue, then every other queue a registered task runs on, in the
        order the tasks were registered: what a worker consumes unless told otherwise."""
        names = [self.default_queue, *(task.options.queue for task in self.tasks.values())]
        return tuple(dict.fromkeys(names))

    def get_task(self, name: str) -> Task[Any, Any]:
        try:
            return self.tasks[name]
        except KeyError:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise ConfigError(f"no task named {name!r}; registered: {known}") from None

    # the broker

    @property
    def broker_location(self) -> str:
        """Where the broker keeps its data, password masked and a ``sqlite:///`` file as
        an absolute path: what to compare when two processes should share one store."""
        if self._broker is not None:
            return self._broker.location
        return open_broker(self.broker_url).location

    async def abroker(self) -> Broker:
        """The broker for this event loop, connected on first use.

        A store private to its connection (``memory://``) lives on the App's background
        loop instead, shared by async and sync calls, so that both see the same jobs.
        """
        if self._broker is None:
            broker = open_broker(self.broker_url)
            if broker.private_store:
                portal, broker = self._portal_side()
                broker = PortalBroker(broker, portal)  # type: ignore[abstract]
            self._broker = broker
        await self._broker.connect()
        return self._broker

    def _portal_side(self) -> tuple[Portal, Broker]:
        if self._portal is None or self._portal_broker is None:
            self._portal = Portal("conveyor-app")
            self._portal_broker = open_broker(self.broker_url)
        return self._portal, self._portal_broker

    async def astates(self) -> JobStates:
        """The job state machine on this loop's broker and result store."""
        broker = await self.abroker()
        if self._states is None or self._states.broker is not broker:
            self._states = JobStates(broker, await self._open_results(broker))
        return self._states

    async def aresults(self) -> ResultStore:
        """Where this app's job records live, connected on first use."""
        return (await self.astates()).results

    def has_results(self, broker: Broker) -> bool:
        """Whether this app keeps job records: a result store of its own, or the broker's."""
        return self.results_url is not None or Capability.RESULTS in broker.capabilities

    async def _open_results(self, broker: Broker) -> ResultStore:
        if self.results_url is not None:
            results = open_results(self.results_url)
        else:
            try:
                results = broker.results()
            except NotSupported:
                raise ConfigError(
                    f"the {broker.scheme}:// broker keeps no job results: pass "
                    "App(..., results_url='redis://localhost:6379/0') or a sqlite:/// file"
                ) from None
        await results.connect()
        return results

    def call_sync(self, call: Callable[[Broker], Awaitable[T]]) -> T:
        """Run ``call(broker)`` on the private loop, for code without an event loop."""
        return self.call_states(lambda states: call(states.broker))

    def call_states(self, call: Callable[[JobStates], Awaitable[T]]) -> T:
        """Run ``call(states)`` on the private loop, with its own broker and result store."""
        portal, broker = self._portal_side()

        async def run() -> T:
            await broker.connect()
            if self._portal_states is None:
                self._portal_states = JobStates(broker, await self._open_results(broker))
            return await call(self._portal_states)

        return portal.call(run())

    async def aclose(self) -> None:
        """Close this loop's connections (a private store stays open until ``close``)."""
        shared = isinstance(self._broker, PortalBroker)
        if self._states is not None and not shared:
            await self._states.results.close()
        if self._broker is not None and not shared:
            await self._broker.close()
        self._states = None
        self._broker = None

    def close(self) -> None:
        if self._portal is not None:
            states, broker = self._portal_states, self._portal_broker
            if states is not None:
                self._portal.call(states.results.close())
            if broker is not None:
                self._portal.call(broker.close())
            self._portal.close()
            self._portal = self._portal_broker = self._portal_states = None

    async def ensure_queue(self, broker: Broker, queue: str) -> None:
        """Declare a task queue and its dead-letter queue once per broker connection."""
        declared = self._declared.setdefault(id(broker), set())
        if queue in declared:
            return
        dead = dead_letter_queue(queue)
        await broker.declare_queue(QueueSpec(dead, lease_timeout=self.lease_timeout))
        await broker.declare_queue(
            QueueSpec(
                queue,
                max_priority=TASK_PRIORITIES,
                dead_letter_exchange="",
                dead_letter_routing_key=dead,
                lease_timeout=self.lease_timeout,
            )
        )
        declared.add(queue)

    # enqueueing

    async def asubmit(self, submissions: Sequence[JobSubmission]) -> list[Job]:
        return await self._submit(await self.astates(), submissions)

    def submit(self, submissions: Sequence[JobSubmission]) -> list[Job]:
        """Enqueue from code without an event loop.

        Where the broker's transactions block anyway (the embedded engine) and the queues
        are declared, the calling thread makes the transaction itself: a hop to the
        background loop and back would cost more than the write.
        """
        states = self._portal_states
        if states is not None and states.atomic and states.broker.blocking_submit:
            declared = self._declared.get(id(states.broker), set())
            if all(submission.queue in declared for submission in submissions):
                records = states.broker.submit_jobs_blocking(submissions)
                return [Job(self, record) for record in records]
        return self.call_states(lambda states: self._submit(states, submissions))

    async def _submit(self, states: JobStates, submissions: Sequence[JobSubmission]) -> list[Job]:
        for queue in {submission.queue for submission in submissions}:
            await self.ensure_queue(states.broker, queue)
        return [Job(self, record) for record in await states.submit(submissions)]

    async def asend_task(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Job:
        """Enqueue a task by name with JSON-compatible arguments (validated like any call)."""
        return await self.get_task(name).asend(args, kwargs, **options)

    def send_task(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Job:
        return self.get_task(name).send(args, kwargs, **options)

    async def aworkers(self) -> list[WorkerInfo]:
        """Workers that have reported in; ``lost`` ones stopped heartbeating."""
        return await (await self.aresults()).list_workers()

    def workers(self) -> list[WorkerInfo]:
        return self.call_states(lambda states: states.results.list_workers())

    async def ajob(self, job_id: str) -> Job:
        """The job with this id; raises JobNotFound if it never existed or has expired."""
        return Job(self, await (await self.aresults()).get_job(job_id))

    def job(self, job_id: str) -> Job:
        return Job(self, self.call_states(lambda states: states.results.get_job(job_id)))

    async def ajobs(self, query: JobQuery | None = None, **filters: Any) -> JobPage:
        """Kept job records, newest update first: ``JobQuery`` fields as keywords
        (``status``, ``task``, ``queue``, ``since``, ``limit``, ``offset``)."""
        return await (await self.aresults()).list_jobs(query or JobQuery(**filters))

    def jobs(self, query: JobQuery | None = None, **filters: Any) -> JobPage:
        chosen = query or JobQuery(**filters)
        return self.call_states(lambda states: states.results.list_jobs(chosen))

    # dead letters

    async def adead_letters(
        self, queue: str | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[DeadLetter]:
        """Jobs of ``queue`` that failed for good, oldest first, without removing them."""
        broker = await self.abroker()
        return await self._dead_letters(broker, queue, limit, offset)

    def dead_letters(
        self, queue: str | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[DeadLetter]:
        return self.call_sync(lambda broker: self._dead_letters(broker, queue, limit, offset))

    async def _dead_letters(
        self, broker: Broker, queue: str | None, limit: int, offset: int
    ) -> list[DeadLetter]:
        source = queue or self.default_queue
        await self.ensure_queue(broker, source)
        dead = dead_letter_queue(source)
        return await list_dead_letters(broker, dead, limit=limit, offset=offset)

    async def areplay_dead_letters(
        self,
        queue: str | None = None,
        *,
        job_ids: Sequence[str] | None = None,
        to_queue: str | None = None,
    ) -> int:
        """Send dead jobs back to be run again (all, or ``job_ids``); returns how many."""
        return await self._replay(await self.astates(), queue, job_ids, to_queue)

    def replay_dead_letters(
        self,
        queue: str | None = None,
        *,
        job_ids: Sequence[str] | None = None,
        to_queue: str | None = None,
    ) -> int:
        return self.call_states(lambda states: self._replay(states, queue, job_ids, to_queue))

    async def _replay(
        self,
        states: JobStates,
        queue: str | None,
        job_ids: Sequence[str] | None,
        to_queue: str | None,
    ) -> int:
        source = queue or self.default_queue
        target = to_queue or source
        await self.ensure_queue(states.broker, source)
        await self.ensure_queue(states.broker, target)
        return await states.replay(dead_letter_queue(source), target, job_ids=job_ids)

    async def apurge_dead_letters(self, queue: str | None = None) -> int:
        broker = await self.abroker()
        return await broker.purge_queue(dead_letter_queue(queue or self.default_queue))

    def purge_dead_letters(self, queue: str | None = None) -> int:
        source = dead_letter_queue(queue or self.default_queue)
        return self.call_sync(lambda broker: broker.purge_queue(source))

    # streams

    async def acreate_topic(
        self, name: str, partitions: int = 1, config: TopicConfig | None = None
    ) -> None:
        """Create the topic, or do nothing if it exists with these settings."""
        broker = await self.abroker()
        await broker.create_topic(TopicSpec(name, partitions, config or TopicConfig()))

    def create_topic(
        self, name: str, partitions: int = 1, config: TopicConfig | None = None
    ) -> None:
        spec = TopicSpec(name, partitions, config or TopicConfig())
        self.call_sync(lambda broker: broker.create_topic(spec))

    async def aproduce(
        self,
        topic: str,
        value: Value,
        *,
        key: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        timestamp: float | None = None,
        partition: int | None = None,
    ) -> RecordMetadata:
        """Append one record (bytes, str, or JSON-compatible ``value``)."""
        producer = await self.aproducer()
        return await producer.send(
            topic, value, key=key, headers=headers, timestamp=timestamp, partition=partition
        )

    def produce(
        self,
        topic: str,
        value: Value,
        *,
        key: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        timestamp: float | None = None,
        partition: int | None = None,
    ) -> RecordMetadata:
        one = record(value, key=key, headers=headers, timestamp=timestamp, partition=partition)

        async def send(broker: Broker) -> RecordMetadata:
            producer = Producer(broker, auto_create_topics=self.auto_create_topics)
            (metadata,) = await producer.send_batch(topic, [one])
            return metadata

        return self.call_sync(send)

    async def aproducer(self, **options: Any) -> Producer:
        """A Producer on this loop's broker (one shared, unless options given), idempotent
        where the broker can be."""
        broker = await self.abroker()
        if options:
            return Producer(broker, **{"auto_create_topics": self.auto_create_topics, **options})
        shared = self._producer
        if (
            shared is None
            or shared.broker is not broker
            or shared.auto_create_topics != self.auto_create_topics
        ):
            self._producer = shared = Producer(broker, auto_create_topics=self.auto_create_topics)
        return shared

    async def aconsumer(self, *topics: str, **options: Any) -> StreamConsumer:
        """A StreamConsumer on this loop's broker; see StreamConsumer for the options."""
        broker = await self.abroker()
        if self.auto_create_topics:
            await ensure_topics(broker, topics)
        return open_consumer(broker, topics, **options)
