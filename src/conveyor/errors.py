"""The one error hierarchy. Every error says what happened and what to do about it.

```
ConveyorError
├─ ConfigError                 bad option, URL, name or declaration
├─ NotSupported                a backend lacks a capability (names the alternatives)
├─ BrokerError
│  ├─ BrokerUnavailable        cannot reach or open the broker (or result store)
│  │  ├─ DatabaseLocked        the embedded database stayed locked past lock_timeout
│  │  └─ DatabaseError         the embedded database file cannot be used
│  │     ├─ NotAConveyorDatabase  the file is something else, or is corrupt
│  │     └─ SchemaTooNew       written by a newer Conveyor
│  ├─ QueueNotFound
│  ├─ ExchangeNotFound
│  ├─ QueueFull                max length reached with overflow "reject-publish"
│  ├─ Unroutable               a mandatory publish matched no queue
│  ├─ LeaseLost                ack/nack/extend after the lease passed to someone else
│  ├─ TopicNotFound
│  ├─ PartitionNotFound        a partition number the topic does not have
│  ├─ OffsetOutOfRange         before the log start (retention) or past its end
│  ├─ NoOffset                 no committed offset and auto_offset_reset="none"
│  ├─ MemberFenced             a group member that was removed, or a stale generation
│  └─ SequenceError            an idempotent producer's batch out of order
├─ MessageError
│  ├─ DecodeError
│  ├─ MessageTooLarge
│  └─ ValidationError          task arguments do not fit the task's signature or types
├─ TaskError                   raised by task code to steer retries
│  ├─ TemporaryError           retry (after ``delay`` if given)
│  ├─ PermanentError           do not retry: dead-letter now
│  ├─ Retry                    retry after ``delay``, as the task asks
│  └─ TaskTimeout              the task ran past its timeout
└─ JobError
   ├─ JobNotFound
   ├─ ResultTimeout            the job did not finish within the wait
   ├─ IdempotencyConflict      an idempotency key sent again with other arguments
   └─ JobFailed                the job ended failed or dead; carries its error
```

Errors carry their context as attributes (``queue``, ``capability``...) so that callers
and the CLI can act on them without parsing messages.
"""

from __future__ import annotations

from collections.abc import Iterable


class ConveyorError(Exception):
    """Base of every error Conveyor raises on purpose."""


class ConfigError(ConveyorError):
    """An option, URL, name or declaration is invalid or conflicts with what exists."""


class NotSupported(ConveyorError):
    """The backend lacks a capability; the message names backends that have it."""

    def __init__(self, capability: str, backend: str, alternatives: Iterable[str] = ()) -> None:
        self.capability = capability
        self.backend = backend
        self.alternatives = tuple(alternatives)
        hint = (
            f"; use a broker that supports it: {', '.join(self.alternatives)}"
            if self.alternatives
            else ""
        )
        super().__init__(f"the {backend} broker does not support {capability}{hint}")


class BrokerError(ConveyorError):
    """A broker refused or failed an operation."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached or opened.

    ``transient`` says whether trying again later may succeed (a lost connection, a held
    lock) or not until someone acts (a corrupt file).
    """

    transient = True


class DatabaseLocked(BrokerUnavailable):
    """Another connection held the embedded database's write lock past ``lock_timeout``."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        super().__init__(
            f"{path} stayed locked for more than {timeout:g}s; find the process holding it "
            "(e.g. `fuser` or `lsof`) or raise lock_timeout in the broker URL"
        )


class DatabaseError(BrokerUnavailable):
    """The embedded database file cannot be used as it is.

    A kind of BrokerUnavailable, so that callers above the seam handle one error for "the
    store cannot be used", whatever the engine.
    """

    transient = False

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(message)


class NotAConveyorDatabase(DatabaseError):
    """The file is not a Conveyor database (another program's file, or corrupt)."""


class SchemaTooNew(DatabaseError):
    """The database was written by a newer Conveyor whose schema this one cannot read."""


class QueueNotFound(BrokerError):
    def __init__(self, queue: str) -> None:
        self.queue = queue
        super().__init__(f"queue {queue!r} does not exist; declare it first (declare_queue)")


class ExchangeNotFound(BrokerError):
    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        super().__init__(
            f"exchange {exchange!r} does not exist; declare it first (declare_exchange)"
        )


class QueueFull(BrokerError):
    """A queue with ``overflow="reject-publish"`` is at its max length or max bytes."""

    def __init__(self, queue: str, limit: str) -> None:
        self.queue = queue
        self.limit = limit
        super().__init__(
            f"queue {queue!r} is full ({limit}); nothing was published. Consume or purge it, "
            "raise the limit, or declare it with overflow='drop-head'"
        )


class Unroutable(BrokerError):
    """A publish with ``mandatory=True`` matched no queue."""

    def __init__(self, exchange: str, routing_key: str) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        super().__init__(
            f"no queue is bound to exchange {exchange!r} for routing key {routing_key!r}; "
            "nothing was published. Bind a queue or publish without mandatory=True"
        )


class LeaseLost(BrokerError):
    """The delivery's lease lapsed; the message may already be with another consumer."""

    def __init__(self, queue: str, message_id: str) -> None:
        self.queue = queue
        self.message_id = message_id
        super().__init__(
            f"the lease on message {message_id!r} in queue {queue!r} has lapsed and the message "
            "was or will be redelivered; extend leases for long work (extend_lease) or raise "
            "the queue's lease_timeout"
        )


class TopicNotFound(BrokerError):
    def __init__(self, topic: str) -> None:
        self.topic = topic
        super().__init__(
            f"topic {topic!r} does not exist; create it first (conveyor topics create {topic}, "
            "or app.create_topic), or let the App create topics (auto_create_topics=True)"
        )


class PartitionNotFound(BrokerError):
    def __init__(self, topic: str, partition: int, partitions: int) -> None:
        self.topic = topic
        self.partition = partition
        self.partitions = partitions
        super().__init__(
            f"topic {topic!r} has partitions 0-{partitions - 1}, not {partition}; pick one "
            "of those or add partitions (alter_topic)"
        )


class OffsetOutOfRange(BrokerError):
    """The offset is before the log start (retention removed it) or past the log end."""

    def __init__(self, topic: str, partition: int, offset: int, start: int, end: int) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.start = start
        self.end = end
        super().__init__(
            f"offset {offset} is outside {topic}[{partition}], which holds {start}-{end}; seek "
            "to an offset in that range, or set auto_offset_reset to 'earliest' or 'latest'"
        )


class NoOffset(BrokerError):
    """A group has no committed offset for a partition and the reset policy is "none"."""

    def __init__(self, group: str, topic: str, partition: int) -> None:
        self.group = group
        self.topic = topic
        self.partition = partition
        super().__init__(
            f"group {group!r} has no committed offset for {topic}[{partition}] and "
            "auto_offset_reset is 'none'; seek first, or use 'earliest' or 'latest'"
        )


class MemberFenced(BrokerError):
    """A group member was removed (missed its session timeout) or acts on a stale generation.

    Its commits are refused so that it cannot overwrite the progress of the member that
    owns the partition now; it must rejoin the group.
    """

    def __init__(self, group: str, member_id: str, reason: str) -> None:
        self.group = group
        self.member_id = member_id
        self.reason = reason
        super().__init__(
            f"member {member_id!r} of group {group!r} is fenced: {reason}; nothing was "
            "committed. Rejoin the group and process from the committed offsets"
        )


class SequenceError(BrokerError):
    """An idempotent producer's batch arrived out of order: a batch before it was lost."""

    def __init__(self, producer_id: str, expected: int, got: int) -> None:
        self.producer_id = producer_id
        self.expected = expected
        self.got = got
        super().__init__(
            f"producer {producer_id!r} sent sequence {got}, but {expected} was expected; "
            "nothing was stored. Use one producer per sending task, and retry a failed send "
            "before sending the next"
        )


class MessageError(ConveyorError):
    """A message cannot be encoded, decoded or accepted."""


class DecodeError(MessageError):
    """A message body or its headers cannot be decoded."""


class MessageTooLarge(MessageError):
    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"message of {size} bytes is over the {limit}-byte limit; store large payloads "
            "elsewhere and send a reference, or raise max_message_size in the broker URL"
        )


class ValidationError(MessageError):
    """Task arguments do not match the task's signature or types; names the field."""

    def __init__(self, task: str, field: str, problem: str) -> None:
        self.task = task
        self.field = field
        self.problem = problem
        super().__init__(
            f"task {task!r}: argument {field!r} {problem}; fix the call (nothing was sent)"
        )


class TaskError(ConveyorError):
    """Raised by task code to say how its failure should be handled."""


class TemporaryError(TaskError):
    """A failure worth retrying (a timeout talking to a server, a 503, a locked row)."""

    def __init__(self, message: str = "", *, delay: float | None = None) -> None:
        self.delay = delay
        super().__init__(message)


class PermanentError(TaskError):
    """A failure no retry will fix: the message goes straight to the dead-letter queue."""


class Retry(TaskError):
    """Ask for another attempt after ``delay`` seconds (counts as an attempt)."""

    def __init__(self, delay: float = 0.0, message: str = "") -> None:
        self.delay = delay
        super().__init__(message or f"retry requested in {delay:g}s")


class TaskTimeout(TaskError):
    def __init__(self, task: str, timeout: float) -> None:
        self.task = task
        self.timeout = timeout
        super().__init__(
            f"task {task!r} ran longer than its timeout of {timeout:g}s; raise timeout= on the "
            "task or split the work"
        )


class JobError(ConveyorError):
    """A job handle's question cannot be answered as asked."""


class JobNotFound(JobError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id!r}: it never existed, or its record expired (result_ttl)")


class ResultTimeout(JobError):
    """The job had not finished when the wait ended; ``why`` says what the workers on its
    store suggest (none running, none on its queue, or busy)."""

    def __init__(self, job_id: str, timeout: float, why: str = "") -> None:
        self.job_id = job_id
        self.timeout = timeout
        self.why = why
        super().__init__(
            f"job {job_id!r} did not finish within {timeout:g}s: "
            f"{why or 'wait longer or check its status and the workers'}"
        )


class IdempotencyConflict(JobError):
    """An idempotency key already names a job of another task or other arguments: the
    key means "this request", so a different request under it is refused, not merged."""

    def __init__(self, key: str, job_id: str) -> None:
        self.key = key
        self.job_id = job_id
        super().__init__(
            f"idempotency key {key!r} already names job {job_id!r}, sent with other arguments "
            "(or another task); nothing was enqueued. Use a new key for a new request"
        )


class JobFailed(JobError):
    """The job failed for good; ``error`` holds its type, message and traceback."""

    def __init__(self, job_id: str, error: dict[str, object]) -> None:
        self.job_id = job_id
        self.error = error
        super().__init__(
            f"job {job_id!r} failed: {error.get('type')}: {error.get('message')}; see its "
            "dead letter for the traceback"
        )
