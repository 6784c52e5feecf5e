"""Values that cross the Broker seam. All frozen: backends share no hidden state with callers."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any

from conveyor.errors import ConfigError
from conveyor.message import MAX_PRIORITY, Message
from conveyor.names import check_name, check_routing_key
from conveyor.routing import ExchangeType, check_headers_arguments, check_topic_pattern

Seconds = float | timedelta


MAX_SECONDS = 100 * 365.25 * 86400
"""The longest duration any option takes (a century): in milliseconds it still fits the
64-bit integers stores and protocols keep times in."""


def seconds(value: Seconds | None, option: str, *, positive: bool = False) -> float | None:
    """Normalize a duration option to float seconds, refusing negatives, NaN and durations
    past ``MAX_SECONDS``."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:  # NaN
        raise ConfigError(f"{option} must be a number of seconds or a timedelta, not {value!r}")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{option} must be {'> 0' if positive else '>= 0'} seconds, not {value}")
    if value > MAX_SECONDS:
        shown = f"{value:g}" if isinstance(value, float) else f"{str(value)[:12]}..."
        raise ConfigError(
            f"{option} must be at most {MAX_SECONDS:.0f} seconds (a century), not {shown}"
        )
    return float(value)


def as_float(value: Seconds | None) -> float | None:
    """A duration already normalized by a spec, typed as the float it is."""
    return value.total_seconds() if isinstance(value, timedelta) else value


def _count(value: int | None, option: str, *, upper: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{option} must be a positive integer, not {value!r}")
    if upper is not None and value > upper:
        raise ConfigError(f"{option} must be at most {upper}, not {value}")
    return value


class Overflow(StrEnum):
    """What a full queue does with a new message (RabbitMQ's ``x-overflow``)."""

    DROP_HEAD = "drop-head"
    REJECT_PUBLISH = "reject-publish"


class DeadLetterReason(StrEnum):
    """Why a message left its queue for the dead-letter target (RabbitMQ's x-death reasons)."""

    REJECTED = "rejected"
    EXPIRED = "expired"
    MAXLEN = "maxlen"
    DELIVERY_LIMIT = "delivery_limit"


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue and its options. Declaring the same spec twice is a no-op.

    Args:
        max_priority: enables priorities 0..max_priority (at most 255); higher first.
        message_ttl: seconds a message may wait before it expires (and is dead-lettered).
        expires: seconds of disuse (no receive, no redeclare) after which the queue is deleted.
        max_length / max_bytes: limits on the messages held (ready, delayed and leased).
        overflow: when full, drop the oldest waiting message or refuse the publish.
        dead_letter_exchange: where rejected, expired, dropped and poison messages go
            ("" is the default exchange, so the routing key then names a queue).
        dead_letter_routing_key: routing key for dead letters; default: the message's own.
        lease_timeout: seconds a receiver holds a message before it is redelivered.
        delivery_limit: deliveries after which a message counts as poison and is dead-lettered.
    """

    name: str
    max_priority: int | None = None
    message_ttl: Seconds | None = None
    expires: Seconds | None = None
    max_length: int | None = None
    max_bytes: int | None = None
    overflow: Overflow = Overflow.DROP_HEAD
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    lease_timeout: Seconds = 30.0
    delivery_limit: int | None = None

    def __post_init__(self) -> None:
        check_name("queue", self.name)
        _set = object.__setattr__
        _set(self, "max_priority", _count(self.max_priority, "max_priority", upper=MAX_PRIORITY))
        _set(self, "message_ttl", seconds(self.message_ttl, "message_ttl"))
        _set(self, "expires", seconds(self.expires, "expires", positive=True))
        _set(self, "max_length", _count(self.max_length, "max_length"))
        _set(self, "max_bytes", _count(self.max_bytes, "max_bytes"))
        _set(self, "lease_timeout", seconds(self.lease_timeout, "lease_timeout", positive=True))
        _set(self, "delivery_limit", _count(self.delivery_limit, "delivery_limit"))
        try:
            _set(self, "overflow", Overflow(self.overflow))
        except ValueError:
            raise ConfigError(
                f"overflow must be one of {[o.value for o in Overflow]}, not {self.overflow!r}"
            ) from None
        if self.dead_letter_exchange:
            check_name("exchange", self.dead_letter_exchange)
        if self.dead_letter_routing_key is not None:
            if self.dead_letter_exchange is None:
                raise ConfigError(
                    "dead_letter_routing_key needs dead_letter_exchange; use '' (the default "
                    "exchange) to dead-letter straight into the queue the key names"
                )
            check_routing_key(self.dead_letter_routing_key)

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> QueueSpec:
        """Build a spec from loosely typed options (CLI, config files), naming unknown keys."""
        known = {f.name for f in fields(cls)} - {"name"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"unknown queue option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        return cls(name, **options)

    def options(self) -> dict[str, Any]:
        """The options that differ from the defaults (for storage and display)."""
        default = QueueSpec(self.name)
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "name" and getattr(self, f.name) != getattr(default, f.name)
        }


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    """An exchange. ``alternate_exchange`` receives what this one cannot route."""

    name: str
    type: ExchangeType = ExchangeType.DIRECT
    alternate_exchange: str | None = None

    def __post_init__(self) -> None:
        check_name("exchange", self.name)
        try:
            object.__setattr__(self, "type", ExchangeType(self.type))
        except ValueError:
            raise ConfigError(
                f"exchange type must be one of {[t.value for t in ExchangeType]}, not {self.type!r}"
            ) from None
        if self.alternate_exchange is not None:
            check_name("exchange", self.alternate_exchange)


@dataclass(frozen=True, slots=True)
class Binding:
    """Routes messages from an exchange to a queue.

    ``routing_key`` is the exact key (direct) or a pattern (topic); ``arguments`` are the
    header values to match (headers exchange, with ``x-match`` "all" or "any").
    """

    exchange: str
    queue: str
    routing_key: str = ""
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name("exchange", self.exchange)
        check_name("queue", self.queue)
        check_routing_key(self.routing_key)
        check_topic_pattern(self.routing_key)
        check_headers_arguments(self.arguments)


@dataclass(slots=True)
class Delivery:
    """A message handed to one consumer, to settle through the broker that delivered it.

    ``receipt`` is the backend's own proof of the delivery (a lease token, a channel and
    delivery tag, a stream entry id): callers pass it back untouched. ``tag`` tells this
    process's unsettled deliveries apart. ``lease_deadline`` (epoch seconds) is when the
    message comes back to the queue unsettled; ``None`` where the backend holds a delivery
    until it is settled or the connection drops (no LEASES). Not frozen: a broker makes one
    per message delivered, and a frozen dataclass costs several times as much to build.
    """

    message: Message
    queue: str
    delivery_count: int
    receipt: Any
    lease_deadline: float | None
    tag: int = field(repr=False)

    @property
    def redelivered(self) -> bool:
        return self.delivery_count > 1

    def lease_lapsed(self, now: float) -> bool:
        """The lease ran out by ``now`` (never, without a lease deadline)."""
        return self.lease_deadline is not None and self.lease_deadline <= now

    def with_deadline(self, lease_deadline: float) -> Delivery:
        return replace(self, lease_deadline=lease_deadline)


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A snapshot of one queue. ``None`` is a figure this backend cannot know (never 0).

    On the embedded broker ``ready``, ``delayed``, ``unacked`` and ``bytes`` are exact. The
    lifetime counters (``published``, ``delivered``, ``acked``, ``dead_lettered``) are
    statistics, as RabbitMQ's rates are: each process stores its own at most once a second
    and when it closes, so another process's last second may not show yet, and a process
    killed outright takes its last second of counting with it. Messages are never affected.
    On RabbitMQ only ``ready`` is exact; the rest come from the management API, sampled.
    """

    queue: str
    ready: int
    delayed: int | None
    unacked: int | None
    oldest_age: float | None
    published: int | None
    delivered: int | None
    acked: int | None
    dead_lettered: int | None
    bytes: int | None

    @property
    def depth(self) -> int | None:
        """Every message the queue holds, or None when a part of it is unknown."""
        if self.delayed is None or self.unacked is None:
            return None
        return self.ready + self.delayed + self.unacked

    @property
    def at_least(self) -> int:
        """The depth where it is known, else the messages known to wait: a lower bound."""
        depth = self.depth
        return depth if depth is not None else self.ready + (self.delayed or 0)


@dataclass(frozen=True, slots=True)
class QueueSample:
    """A queue's figures at one moment, kept by a ResultStore for charts that outlive the
    server that drew them. ``None`` is a figure the broker could not know, never 0."""

    queue: str
    at: float
    depth: int | None
    published: int | None
    acked: int | None
    dead_lettered: int | None

    @classmethod
    def of(cls, stats: QueueStats, at: float) -> QueueSample:
        return cls(stats.queue, at, stats.depth, stats.published, stats.acked, stats.dead_lettered)


@dataclass(frozen=True, slots=True)
class ExchangeStats:
    """An exchange, its bindings, and how many messages it could route nowhere (dropped).

    ``None`` is what the backend cannot know (RabbitMQ without its management API).
    """

    exchange: str
    type: ExchangeType | None
    bindings: tuple[Binding, ...] | None
    unroutable: int | None


class JobStatus(StrEnum):
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED})


DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0, 300.0, 600.0, 1800.0, 3600.0)  # fmt: skip
"""Default upper bounds (seconds) of the job duration histogram in ``TaskStats``."""


def check_buckets(buckets: Sequence[float]) -> tuple[float, ...]:
    """Histogram upper bounds as given, refused unless positive, finite and increasing."""
    bounds = tuple(float(bound) for bound in buckets)
    if any(not math.isfinite(b) or b <= 0 for b in bounds) or list(bounds) != sorted(set(bounds)):
        raise ConfigError(
            "histogram buckets must be distinct positive numbers in increasing order, not "
            f"{list(buckets)!r}"
        )
    return bounds


@dataclass(frozen=True, slots=True)
class TaskStats:
    """The job records of one task that are kept (``result_ttl``), for metrics.

    ``statuses`` counts records by status, ``running`` read off live leases as ``get_job``
    does. The duration histogram covers finished jobs (succeeded, failed, dead): how long
    their last attempt ran, from its start until its outcome was stored.
    ``duration_buckets`` pairs each upper bound (seconds) with how many ran at most that
    long, cumulative as Prometheus counts them; ``duration_count`` is all of them.
    """

    task: str
    statuses: Mapping[JobStatus, int]
    duration_buckets: tuple[tuple[float, int], ...]
    duration_count: int
    duration_sum: float


@dataclass(frozen=True, slots=True)
class JobSubmission:
    """A job to record and its message to enqueue, as one step.

    With an ``idempotency_key``, a job with the same key created less than
    ``idempotency_window`` seconds ago is returned instead, and nothing is enqueued.
    """

    message: Message
    queue: str
    task: str
    delay: float = 0.0
    idempotency_key: str | None = None
    idempotency_window: float = 3600.0
    result_ttl: float = 86400.0
    request_digest: str | None = None
    """With a key: a hash of the task and its arguments, kept in the record, so that the
    key sent again with another request is told apart (``check_same_request``)."""


@dataclass(frozen=True, slots=True)
class JobRecord:
    """What is known of a job. Times are epoch seconds; ``result`` and ``progress`` are JSON."""

    id: str
    task: str
    queue: str
    status: JobStatus
    attempts: int
    created_at: float
    updated_at: float
    scheduled_for: float | None = None
    first_attempt_at: float | None = None
    last_attempt_at: float | None = None
    result: Any = None
    error: Mapping[str, Any] | None = None
    progress: Any = None
    idempotency_key: str | None = None
    request_digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as the HTTP API and ``--json`` show it."""
        return {
            "id": self.id,
            "task": self.task,
            "queue": self.queue,
            "status": self.status.value,
            "finished": self.status.finished,
            "attempts": self.attempts,
            "result": self.result,
            "error": self.error,
            "progress": self.progress,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "scheduled_for": self.scheduled_for,
            "first_attempt_at": self.first_attempt_at,
            "last_attempt_at": self.last_attempt_at,
            "idempotency_key": self.idempotency_key,
        }


@dataclass(frozen=True, slots=True)
class JobQuery:
    """Which job records to list: every filter given must hold; newest update first."""

    status: JobStatus | None = None
    task: str | None = None
    queue: str | None = None
    since: float | None = None
    """Only records updated at or after this (epoch seconds)."""
    limit: int = 100
    offset: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ConfigError(f"limit must be a positive integer, not {self.limit!r}")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or self.offset < 0:
            raise ConfigError(f"offset must be an integer >= 0, not {self.offset!r}")

    def matches(self, record: JobRecord) -> bool:
        return (
            (self.status is None or record.status is self.status)
            and (self.task is None or record.task == self.task)
            and (self.queue is None or record.queue == self.queue)
            and (self.since is None or record.updated_at >= self.since)
        )

    def page(self, records: Sequence[JobRecord]) -> JobPage:
        """The records that match, newest update first, cut to this query's page."""
        found = sorted(
            (record for record in records if self.matches(record)),
            key=lambda record: (record.updated_at, record.id),
            reverse=True,
        )
        return JobPage(found[self.offset : self.offset + self.limit], len(found))


@dataclass(frozen=True, slots=True)
class JobPage:
    items: list[JobRecord]
    total: int
    """How many records match in all, beyond this page too."""


@dataclass(slots=True)
class Settlement:
    """How one delivered job ended its attempt; the broker settles message and record together.

    SUCCEEDED, FAILED and CANCELLED acknowledge the message; RETRYING gives it back after
    ``retry_delay``; DEAD moves it to the queue's dead-letter target with a failure record.
    Not frozen: a worker makes one per job, and a frozen dataclass costs several times as
    much to build.
    """

    delivery: Delivery
    status: JobStatus
    started_at: float
    worker: str = ""
    result: Any = None
    error: Mapping[str, Any] | None = None
    retry_delay: float = 0.0


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A message as it waits in a queue, seen without leasing it."""

    message: Message
    queue: str
    delivery_count: int
    enqueued_at: float
    available_at: float
    leased: bool


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker's last heartbeat."""

    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    started_at: float
    heartbeat_at: float
    running: int = 0
    processed: int = 0
    failed: int = 0
    concurrency: int = 1

    def to_json(self, now: float, lost_after: float = 15.0) -> dict[str, Any]:
        """The heartbeat as the HTTP API and ``--json`` show it."""
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "queues": list(self.queues),
            "concurrency": self.concurrency,
            "running": self.running,
            "processed": self.processed,
            "failed": self.failed,
            "started_at": self.started_at,
            "heartbeat_at": self.heartbeat_at,
            "lost": self.lost(now, after=lost_after),
        }

    def lost(self, now: float, *, after: float = 15.0) -> bool:
        """No heartbeat for ``after`` seconds (three missed beats at the default 5 s).

        A lost worker's jobs come back by themselves once their leases lapse.
        """
        return now - self.heartbeat_at > after
