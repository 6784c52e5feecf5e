"""Delayed messages without a server plugin: one TTL queue per delay and destination.

A delayed message is published into a delay queue whose ``x-message-ttl`` is the delay and
whose dead-letter exchange (and key) lead to where the message was going; when the TTL
runs out RabbitMQ dead-letters it there. Two kinds, by destination:

* ``conveyor.delay.<ms>.queue.<queue>`` dead-letters through the default exchange with
  the routing key ``<queue>``: delayed publishes to the default exchange, and delayed
  retries (``nack(delay=...)``), which must come back to the queue they left and not be
  routed through the original exchange again. Being per queue, their depth is the
  queue's ``delayed`` count, and purging or deleting the queue reaches them.
* ``conveyor.delay.<ms>.exchange.<exchange>`` dead-letters to ``<exchange>`` keeping the
  message's own routing key, which is routed when the delay ends.

Messages reach a delay queue through one headers exchange, ``conveyor.delay``, matching a
``conveyor-delay`` header, so that they keep their routing key on the way in (publishing
to the queue by name would replace it). Delay queue names are reserved.

Precision: RabbitMQ only expires the message at the head of a queue, so a queue must
never hold a message due before one ahead of it. All messages of one delay queue share
one TTL, so FIFO order is expiry order and each leaves on time, within the server's own
timer (some milliseconds). Delays are rounded up to two significant digits (1234 ms ->
1300 ms; at most 10% late, never early) so that jittered retry delays share a bounded
number of queues instead of making one per millisecond value.

Delay queues delete themselves when unused (``x-expires``). Publishing does not count as
use, so a publisher redeclares its delay queue at least every ``MARGIN / 2`` seconds:
each message then leaves its queue well before the queue could expire.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

from conveyor.names import MAX_NAME_LENGTH

DELAY_EXCHANGE = "conveyor.delay"
PREFIX = "conveyor.delay."
MATCH_HEADER = "conveyor-delay"
MARGIN = 600.0


def is_delay_queue(name: str) -> bool:
    return name.startswith(PREFIX)


def bucket_ms(delay: float) -> int:
    """The delay in milliseconds, rounded up to two significant digits (at least 1 ms)."""
    ms = max(math.ceil(round(delay * 1000, 6)), 1)
    step = int(10 ** max(len(str(ms)) - 2, 0))
    return -(-ms // step) * step


@dataclass(frozen=True, slots=True)
class DelayRoute:
    """One delay queue: its name, declare arguments, and its binding's match arguments."""

    queue: str
    ms: int
    dead_letter_exchange: str
    dead_letter_routing_key: str | None

    @classmethod
    def to_queue(cls, delay: float, queue: str) -> DelayRoute:
        ms = bucket_ms(delay)
        return cls(_name(ms, "queue", queue), ms, "", queue)

    @classmethod
    def to_exchange(cls, delay: float, exchange: str) -> DelayRoute:
        ms = bucket_ms(delay)
        return cls(_name(ms, "exchange", exchange), ms, exchange, None)

    @property
    def arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-message-ttl": self.ms,
            "x-expires": self.ms + int(MARGIN * 1000),
            "x-dead-letter-exchange": self.dead_letter_exchange,
        }
        if self.dead_letter_routing_key is not None:
            arguments["x-dead-letter-routing-key"] = self.dead_letter_routing_key
        return arguments

    @property
    def binding(self) -> dict[str, Any]:
        return {"x-match": "all", MATCH_HEADER: self.queue}


def _name(ms: int, kind: str, target: str) -> str:
    name = f"{PREFIX}{ms}.{kind}.{target}"
    if len(name) <= MAX_NAME_LENGTH:
        return name
    return f"{PREFIX}{ms}.{kind}.sha1-{hashlib.sha1(target.encode()).hexdigest()}"


class DelayQueues:
    """Which delay queues this broker declared, and when; due ones are declared again."""

    def __init__(self) -> None:
        self._declared: dict[str, float] = {}

    def due(self, route: DelayRoute) -> bool:
        declared = self._declared.get(route.queue)
        return declared is None or time.monotonic() - declared > MARGIN / 2

    def declared(self, route: DelayRoute) -> None:
        self._declared[route.queue] = time.monotonic()

    def forget(self, name: str | None = None) -> None:
        """Declare again before the next use (all of them without a name)."""
        if name is None:
            self._declared.clear()
        else:
            self._declared.pop(name, None)

    def known(self) -> list[str]:
        return sorted(self._declared)
