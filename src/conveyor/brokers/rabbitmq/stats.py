"""QueueStats and ExchangeStats from what AMQP and the management API each know.

Exact, from AMQP: ``ready`` (a passive declare counts the messages ready now), and
``delayed`` (the ready count of the queue's delay queues, found through the management
API). Sampled, from the management API, up to ``collect_statistics_interval`` old:
``unacked``, ``bytes``, ``oldest_age`` (the head message's AMQP timestamp, in whole
seconds) and the lifetime counters ``published``, ``delivered`` and ``acked``.

Unknown: every management figure when the API is out of reach or has not sampled the
queue yet, and ``dead_lettered`` and ``unroutable`` always (RabbitMQ 3.10 keeps neither
per queue or exchange; messages published ``mandatory`` are returned, not dropped, so
nothing counts them as dropped either). Unknown is ``None``, never a made-up 0.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from conveyor.brokers.types import Binding, ExchangeStats, QueueStats
from conveyor.errors import ConfigError
from conveyor.routing import ExchangeType

UNKNOWN: Any = None
"""What QueueStats and ExchangeStats get for a figure nobody can know. Their fields are
typed ``int``; this stands in until they are ``int | None``."""


def queue_stats(
    name: str, ready: int, delayed: int | None, figures: Mapping[str, Any] | None
) -> QueueStats:
    sampled = figures is not None and "messages_unacknowledged" in figures
    known: Mapping[str, Any] = figures if figures is not None and sampled else {}
    counters: Mapping[str, Any] = known.get("message_stats") or {}

    def counter(key: str) -> int:
        return int(counters.get(key, 0)) if sampled else UNKNOWN

    head = known.get("head_message_timestamp")
    return QueueStats(
        queue=name,
        ready=ready,
        delayed=delayed if delayed is not None else UNKNOWN,
        unacked=known.get("messages_unacknowledged", UNKNOWN),
        oldest_age=max(time.time() - head, 0.0) if isinstance(head, int | float) else None,
        published=counter("publish"),
        delivered=counter("deliver_get"),
        acked=counter("ack"),
        dead_lettered=UNKNOWN,
        bytes=known.get("message_bytes", UNKNOWN),
    )


def exchange_stats(name: str, kind: str | None, listed: list[Any] | None) -> ExchangeStats:
    """``kind`` and ``listed`` (the bindings from the exchange) come from the management
    API; None where it could not say."""
    bindings: tuple[Binding, ...] = UNKNOWN
    if listed is not None:
        bindings = tuple(sorted(_bindings(name, listed), key=_order))
    exchange_type = ExchangeType(kind) if kind in {t.value for t in ExchangeType} else UNKNOWN
    return ExchangeStats(name, exchange_type, bindings, UNKNOWN)


def _bindings(exchange: str, listed: list[Any]) -> list[Binding]:
    found = []
    for entry in listed:
        if not isinstance(entry, dict) or entry.get("destination_type") != "queue":
            continue
        try:
            found.append(
                Binding(
                    exchange,
                    str(entry.get("destination")),
                    str(entry.get("routing_key", "")),
                    dict(entry.get("arguments") or {}),
                )
            )
        except ConfigError:
            continue  # a binding made by another client, outside Conveyor's names
    return found


def _order(binding: Binding) -> tuple[str, str]:
    return binding.queue, binding.routing_key
