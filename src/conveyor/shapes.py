"""The JSON shapes that the HTTP API answers and the CLI's ``--json`` prints, in one place so
that both say the same. Every listing is ``{"items": [...], "total": N, "limit": L,
"offset": O}``."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from conveyor.brokers.types import QueuedMessage
from conveyor.codecs import loads
from conveyor.errors import DecodeError
from conveyor.tasks.dead_letters import DeadLetter

T = TypeVar("T")

MAX_PAGE = 1000
"""Most items one page holds."""


@dataclass(frozen=True, slots=True)
class Paging:
    limit: int
    offset: int

    def page(self, items: Sequence[Any], total: int) -> dict[str, Any]:
        """``total`` is at least what this page shows (counts can lag a moment)."""
        total = max(total, self.offset + len(items)) if items else total
        return {"items": list(items), "total": total, "limit": self.limit, "offset": self.offset}

    def slice(self, items: Sequence[T]) -> list[T]:
        return list(items[self.offset : self.offset + self.limit])


def show_body(body: bytes | None, content_type: str | None = None) -> dict[str, Any]:
    """A stored body as JSON when it is JSON, else as text, else as base64."""
    if body is None:
        return {"body": None, "body_encoding": None}
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in ("", "application/json") or kind.endswith("+json"):
        try:
            return {"body": loads(body), "body_encoding": "json"}
        except DecodeError:
            pass
    try:
        return {"body": body.decode("utf-8"), "body_encoding": "text"}
    except UnicodeDecodeError:
        return {"body": base64.b64encode(body).decode(), "body_encoding": "base64"}


def message_json(queued: QueuedMessage) -> dict[str, Any]:
    message = queued.message
    return {
        "id": message.id,
        "routing_key": message.routing_key,
        "headers": dict(message.headers),
        "priority": message.priority,
        "ttl": message.ttl,
        "timestamp": message.timestamp,
        "content_type": message.content_type,
        **show_body(bytes(message.body), message.content_type),
        "delivery_count": queued.delivery_count,
        "enqueued_at": queued.enqueued_at,
        "available_at": queued.available_at,
        "leased": queued.leased,
    }


def dead_letter_json(dead: DeadLetter, *, detail: bool = False) -> dict[str, Any]:
    """A dead letter as listed; with ``detail``, its traceback and stored message too."""
    summary = dead.to_json()
    if detail:
        summary["traceback"] = dead.traceback
        summary["message"] = message_json(dead.queued)
    return summary
