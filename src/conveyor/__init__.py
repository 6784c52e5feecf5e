"""Conveyor: background jobs and event streams on an embedded broker that grows with you."""

from conveyor.brokers import open_broker
from conveyor.brokers.base import Broker, Capability, Consumer
from conveyor.brokers.embedded.db import Durability
from conveyor.brokers.types import (
    Binding,
    DeadLetterReason,
    Delivery,
    ExchangeSpec,
    ExchangeStats,
    Overflow,
    QueueSpec,
    QueueStats,
)
from conveyor.message import Message
from conveyor.routing import ExchangeType
from conveyor.sync import SyncBroker

__version__ = "0.1.0"

__all__ = [
    "Binding",
    "Broker",
    "Capability",
    "Consumer",
    "DeadLetterReason",
    "Delivery",
    "Durability",
    "ExchangeSpec",
    "ExchangeStats",
    "ExchangeType",
    "Message",
    "Overflow",
    "QueueSpec",
    "QueueStats",
    "SyncBroker",
    "__version__",
    "open_broker",
]
