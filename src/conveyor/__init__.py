"""Conveyor: background jobs and event streams on an embedded broker that grows with you."""

from typing import TYPE_CHECKING, Any

from conveyor.app import App
from conveyor.brokers import open_broker
from conveyor.brokers.base import Broker, Consumer
from conveyor.brokers.capabilities import Capability
from conveyor.brokers.stream_types import CleanupPolicy, OffsetCommit, Record, TopicConfig
from conveyor.brokers.types import (
    Binding,
    DeadLetterReason,
    Delivery,
    ExchangeSpec,
    ExchangeStats,
    JobQuery,
    JobStatus,
    Overflow,
    QueueSpec,
    QueueStats,
)
from conveyor.errors import PermanentError, Retry, TemporaryError
from conveyor.events.producer import record
from conveyor.message import Message
from conveyor.routing import ExchangeType
from conveyor.sync import SyncBroker
from conveyor.tasks.context import job_context
from conveyor.tasks.dead_letters import DeadLetter
from conveyor.tasks.job import Job
from conveyor.tasks.task import Task
from conveyor.version import __version__
from conveyor.worker.consume import Worker

if TYPE_CHECKING:
    from conveyor.brokers.embedded.db import Durability


def __getattr__(name: str) -> Any:
    """``Durability`` belongs to the embedded engine, imported only when asked for."""
    if name == "Durability":
        from conveyor.brokers.embedded.db import Durability

        return Durability
    raise AttributeError(f"module 'conveyor' has no attribute {name!r}")


__all__ = [
    "App",
    "Binding",
    "Broker",
    "Capability",
    "CleanupPolicy",
    "Consumer",
    "DeadLetter",
    "DeadLetterReason",
    "Delivery",
    "Durability",
    "ExchangeSpec",
    "ExchangeStats",
    "ExchangeType",
    "Job",
    "JobQuery",
    "JobStatus",
    "Message",
    "OffsetCommit",
    "Overflow",
    "PermanentError",
    "QueueSpec",
    "QueueStats",
    "Record",
    "Retry",
    "SyncBroker",
    "Task",
    "TemporaryError",
    "TopicConfig",
    "Worker",
    "__version__",
    "job_context",
    "open_broker",
    "record",
]
