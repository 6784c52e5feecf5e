"""The one error hierarchy. Every error says what happened and what to do about it.

```
ConveyorError
├─ ConfigError                 bad option, URL, name or declaration
├─ NotSupported                a backend lacks a capability (names the alternatives)
├─ BrokerError
│  ├─ BrokerUnavailable        cannot reach or open the broker
│  │  └─ DatabaseLocked        the embedded database stayed locked past lock_timeout
│  ├─ DatabaseError            the embedded database file cannot be used
│  │  ├─ NotAConveyorDatabase  the file is something else, or is corrupt
│  │  └─ SchemaTooNew          written by a newer Conveyor
│  ├─ QueueNotFound
│  ├─ ExchangeNotFound
│  ├─ QueueFull                max length reached with overflow "reject-publish"
│  ├─ Unroutable               a mandatory publish matched no queue
│  └─ LeaseLost                ack/nack/extend after the lease passed to someone else
└─ MessageError
   ├─ DecodeError
   └─ MessageTooLarge
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
    """The broker cannot be reached or opened."""


class DatabaseLocked(BrokerUnavailable):
    """Another connection held the embedded database's write lock past ``lock_timeout``."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        super().__init__(
            f"{path} stayed locked for more than {timeout:g}s; find the process holding it "
            "(e.g. `fuser` or `lsof`) or raise lock_timeout in the broker URL"
        )


class DatabaseError(BrokerError):
    """The embedded database file cannot be used as it is."""

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
