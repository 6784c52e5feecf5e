"""QueueSpec and ExchangeSpec as RabbitMQ declare arguments, and back.

Only options that differ from RabbitMQ's defaults become arguments: the server compares
the arguments of a redeclare with the ones the queue was made with, so sending
``x-overflow=drop-head`` to a queue declared without it would be refused as different.

``delivery_limit`` needs a quorum queue: RabbitMQ 3.10 counts deliveries only there.
Conveyor's limit N means "dead-letter instead of the (N+1)th delivery"; quorum's
``x-delivery-limit`` L lets a message be returned L times, so it is delivered L+1 times:
L = N - 1 (checked against the server by the tests). Quorum queues have no priorities.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from conveyor.brokers.rabbitmq.options import QueueType
from conveyor.brokers.types import ExchangeSpec, Overflow, QueueSpec, as_float
from conveyor.errors import ConfigError
from conveyor.routing import ExchangeType

QUEUE_OPTIONS = {
    "x-max-priority": "max_priority",
    "x-message-ttl": "message_ttl",
    "x-expires": "expires",
    "x-max-length": "max_length",
    "x-max-length-bytes": "max_bytes",
    "x-overflow": "overflow",
    "x-dead-letter-exchange": "dead_letter_exchange",
    "x-dead-letter-routing-key": "dead_letter_routing_key",
    "x-delivery-limit": "delivery_limit",
    "x-queue-type": "delivery_limit or the queue_type URL option",
    "durable": "durability (Conveyor declares durable queues)",
    "exclusive": "exclusivity (Conveyor never declares exclusive queues)",
    "auto_delete": "auto-delete (Conveyor never declares auto-delete queues)",
}
EXCHANGE_OPTIONS = {
    "type": "type",
    "alternate-exchange": "alternate_exchange",
    "durable": "durability (Conveyor declares durable exchanges)",
}


def milliseconds(value: float) -> int:
    """Whole milliseconds, rounded up so that a short positive duration never becomes 0."""
    return math.ceil(round(value * 1000, 6))


def queue_arguments(spec: QueueSpec, queue_type: QueueType) -> dict[str, Any]:
    quorum = queue_type is QueueType.QUORUM or spec.delivery_limit is not None
    if quorum and spec.max_priority is not None:
        why = "delivery_limit" if spec.delivery_limit is not None else "queue_type=quorum"
        raise ConfigError(
            f"queue {spec.name!r}: {why} makes it a RabbitMQ quorum queue, and quorum queues "
            "have no priorities in RabbitMQ 3.10 (x-max-priority); drop max_priority or "
            f"{why}"
        )
    arguments: dict[str, Any] = {}
    if quorum:
        arguments["x-queue-type"] = QueueType.QUORUM.value
    if spec.delivery_limit is not None:
        arguments["x-delivery-limit"] = spec.delivery_limit - 1
    if spec.max_priority is not None:
        arguments["x-max-priority"] = spec.max_priority
    message_ttl, expires = as_float(spec.message_ttl), as_float(spec.expires)
    if message_ttl is not None:
        arguments["x-message-ttl"] = milliseconds(message_ttl)
    if expires is not None:
        arguments["x-expires"] = max(milliseconds(expires), 1)
    if spec.max_length is not None:
        arguments["x-max-length"] = spec.max_length
    if spec.max_bytes is not None:
        arguments["x-max-length-bytes"] = spec.max_bytes
    if spec.overflow is not Overflow.DROP_HEAD:
        arguments["x-overflow"] = spec.overflow.value
    if spec.dead_letter_exchange is not None:
        arguments["x-dead-letter-exchange"] = spec.dead_letter_exchange
    if spec.dead_letter_routing_key is not None:
        arguments["x-dead-letter-routing-key"] = spec.dead_letter_routing_key
    return arguments


def spec_from_arguments(name: str, arguments: Mapping[str, Any]) -> QueueSpec:
    """The QueueSpec a queue's arguments stand for (as the management API lists them).

    Arguments Conveyor has no option for are left out; a combination QueueSpec refuses
    falls back to the bare name rather than hiding the queue from a listing.
    """
    options: dict[str, Any] = {}
    for argument, option in (
        ("x-max-priority", "max_priority"),
        ("x-max-length", "max_length"),
        ("x-max-length-bytes", "max_bytes"),
    ):
        if isinstance(arguments.get(argument), int):
            options[option] = arguments[argument]
    for argument, option in (("x-message-ttl", "message_ttl"), ("x-expires", "expires")):
        if isinstance(arguments.get(argument), int):
            options[option] = arguments[argument] / 1000
    if arguments.get("x-overflow") in {o.value for o in Overflow}:
        options["overflow"] = Overflow(arguments["x-overflow"])
    for argument, option in (
        ("x-dead-letter-exchange", "dead_letter_exchange"),
        ("x-dead-letter-routing-key", "dead_letter_routing_key"),
    ):
        if isinstance(arguments.get(argument), str):
            options[option] = arguments[argument]
    if isinstance(arguments.get("x-delivery-limit"), int):
        options["delivery_limit"] = arguments["x-delivery-limit"] + 1
    try:
        return QueueSpec(name, **options)
    except ConfigError:
        return QueueSpec(name)


def exchange_arguments(spec: ExchangeSpec) -> dict[str, Any]:
    if spec.alternate_exchange is None:
        return {}
    return {"alternate-exchange": spec.alternate_exchange}


def exchange_from_listing(
    name: str, kind: str, arguments: Mapping[str, Any]
) -> ExchangeSpec | None:
    """The ExchangeSpec of a listed exchange; None for types Conveyor does not route."""
    if kind not in {t.value for t in ExchangeType}:
        return None
    alternate = arguments.get("alternate-exchange")
    try:
        return ExchangeSpec(name, ExchangeType(kind), alternate if alternate else None)
    except ConfigError:
        return None


_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<argument>[^']+)' for (?P<kind>queue|exchange) '(?P<name>[^']*)'"
    r" in vhost '[^']*': received (?P<received>.*) but current is (?P<current>.*)$"
)


def inequivalent(reply_text: str) -> ConfigError | None:
    """The ConfigError for RabbitMQ's PRECONDITION_FAILED on a redeclare, or None.

    RabbitMQ names the argument in its own terms; the error names the Conveyor option too,
    so whoever reads it knows which line of their declaration to change.
    """
    found = _INEQUIVALENT.search(reply_text)
    if found is None:
        return None
    argument, kind, name = found["argument"], found["kind"], found["name"]
    options = QUEUE_OPTIONS if kind == "queue" else EXCHANGE_OPTIONS
    option = options.get(argument, argument)
    return ConfigError(
        f"{kind} {name!r} already exists with another {option} ({argument}: the server has "
        f"{found['current']}, this declaration asks for {found['received']}); declare it as "
        f"it is, or delete it first (which drops its messages)"
    )
