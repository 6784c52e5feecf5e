"""The ``x-death`` history a dead-lettered message carries, as RabbitMQ writes it. Pure.

Each death is an entry saying where the message died and why, newest first; dying again
in the same queue for the same reason counts up that entry instead of adding one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.brokers.types import DeadLetterReason


def with_death(
    headers: Mapping[str, Any],
    *,
    queue: str,
    reason: DeadLetterReason,
    now: float,
    exchange: str,
    routing_key: str,
    ttl: float | None,
) -> dict[str, Any]:
    """The headers of the dead-lettered copy of a message that died in ``queue``.

    ``exchange`` and ``routing_key`` are what it was published with; ``ttl`` its own
    TTL, which the copy loses (as in RabbitMQ) and the entry keeps as
    ``original-expiration``.
    """
    copy = dict(headers)
    deaths: list[dict[str, Any]] = list(copy.get("x-death", []))
    entry: dict[str, Any] = {
        "queue": queue,
        "reason": reason.value,
        "count": 1,
        "time": now,
        "exchange": exchange,
        "routing-keys": [routing_key],
    }
    if ttl is not None:
        entry["original-expiration"] = str(round(ttl * 1000))
    for index, death in enumerate(deaths):
        if death.get("queue") == queue and death.get("reason") == reason.value:
            entry["count"] = int(death.get("count", 1)) + 1
            del deaths[index]
            break
    copy["x-death"] = [entry, *deaths]
    copy.setdefault("x-first-death-queue", queue)
    copy.setdefault("x-first-death-reason", reason.value)
    copy.setdefault("x-first-death-exchange", exchange)
    return copy


def is_cycle(target_queue: str, headers: Mapping[str, Any]) -> bool:
    """A message back in a queue it died in, with no rejection on the way, is looping.

    Rejections break the cycle: "reject to a delay queue whose TTL routes back" is the
    usual retry-with-delay pattern and must keep working.
    """
    deaths = headers["x-death"]
    return any(death.get("queue") == target_queue for death in deaths) and not any(
        death.get("reason") == DeadLetterReason.REJECTED.value for death in deaths
    )
