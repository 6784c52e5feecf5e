"""RabbitMQ's ``x-death`` header as Conveyor's death history, and back.

RabbitMQ writes ``x-death`` as AMQP tables (``time`` a timestamp, most recent first,
one entry per queue and reason with a ``count``) plus ``x-first-death-*``. Conveyor's
history (see the embedded engine's dead_letters module) is the same shape in JSON terms:
``time`` is epoch seconds. Reading maps one to the other, so ``headers["x-death"]`` looks
the same on every backend.

Delay queues dead-letter too: that is how a delayed message gets back to its target. Their
entries are plumbing, not history, so reading drops them; the latest one still says where
the message came from (see ``DelayExit``).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from conveyor.brokers.rabbitmq.delays import is_delay_queue

X_DEATH = "x-death"
FIRST_DEATH = ("x-first-death-queue", "x-first-death-reason", "x-first-death-exchange")
_ENTRY_KEYS = (
    "queue",
    "reason",
    "count",
    "time",
    "exchange",
    "routing-keys",
    "original-expiration",
)


@dataclass(frozen=True, slots=True)
class DelayExit:
    """The message just left a delay queue: published with this routing key."""

    routing_key: str | None


def plain(value: Any) -> Any:
    """An AMQP table value as JSON-compatible data (the form Conveyor headers take)."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, datetime.datetime):
        return _epoch(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return value


def read(headers: dict[str, Any]) -> DelayExit | None:
    """Rewrite ``headers`` (already plain) from RabbitMQ's form to Conveyor's, in place.

    Returns how the message left a delay queue when that was its latest death.
    """
    entries = headers.get(X_DEATH)
    if not isinstance(entries, list):
        return None
    exit_ = _delay_exit(entries)
    history = [_entry(entry) for entry in entries if not _is_delay_entry(entry)]
    if history:
        headers[X_DEATH] = history
    else:
        del headers[X_DEATH]
    if is_delay_queue(str(headers.get("x-first-death-queue", ""))):
        for key in FIRST_DEATH:
            headers.pop(key, None)
        if history:
            oldest = history[-1]
            headers["x-first-death-queue"] = oldest["queue"]
            headers["x-first-death-reason"] = oldest["reason"]
            headers["x-first-death-exchange"] = oldest["exchange"]
    return exit_


def write(headers: Mapping[str, Any]) -> dict[str, Any]:
    """Headers to publish, with death times as AMQP timestamps as RabbitMQ writes them.

    RabbitMQ updates the ``x-death`` of a message it dead-letters again, so a copy
    republished by Conveyor (a delayed retry, a dead letter moved back) must carry the
    history in the server's own types.
    """
    entries = headers.get(X_DEATH)
    if not isinstance(entries, list):
        return dict(headers)
    written = []
    for entry in entries:
        if isinstance(entry, Mapping):
            entry = dict(entry)
            if isinstance(entry.get("time"), int | float) and not isinstance(entry["time"], bool):
                entry["time"] = datetime.datetime.fromtimestamp(int(entry["time"]), datetime.UTC)
        written.append(entry)
    return {**headers, X_DEATH: written}


def _is_delay_entry(entry: Any) -> bool:
    return isinstance(entry, Mapping) and is_delay_queue(str(entry.get("queue", "")))


def _delay_exit(entries: list[Any]) -> DelayExit | None:
    if not entries or not _is_delay_entry(entries[0]):
        return None
    keys = entries[0].get("routing-keys")
    return DelayExit(str(keys[0]) if isinstance(keys, list) and keys else None)


def _entry(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        return {"entry": entry}
    kept = {key: entry[key] for key in _ENTRY_KEYS if key in entry}
    if "count" in kept:
        kept["count"] = int(kept["count"])
    if isinstance(kept.get("time"), int | float) and not isinstance(kept["time"], bool):
        kept["time"] = float(kept["time"])
    return kept


def _epoch(value: datetime.datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.timestamp()
