"""Messages as stream entries, with fields ``XRANGE`` shows readably.

```
id, body, routing_key, exchange, priority, timestamp     always
headers (JSON), content_type                             when set
deliveries                                               deliveries before this copy
```

An entry written by another client (``XADD`` with fields of its own) is a message too: its
``id`` is the entry id unless a field gives one, and an entry without a ``body`` field
carries its fields as a JSON object, so plain Redis producers can feed a Conveyor queue.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from conveyor.message import Message, decode_headers, encode_headers, stored_message


def fields(message: Message, exchange: str, *, deliveries: int = 0) -> list[bytes | str]:
    """The entry's fields and values, flat, as XADD takes them."""
    flat: list[bytes | str] = [
        "id",
        message.id,
        "body",
        bytes(message.body),
        "routing_key",
        message.routing_key,
        "exchange",
        exchange,
        "priority",
        str(message.priority),
        "timestamp",
        repr(message.timestamp),
    ]
    headers = encode_headers(message.headers)
    if headers is not None:
        flat += ["headers", headers]
    if message.content_type is not None:
        flat += ["content_type", message.content_type]
    if deliveries:
        flat += ["deliveries", str(deliveries)]
    return flat


def message(entry_id: bytes, flat: Sequence[bytes]) -> tuple[Message, int]:
    """The message an entry holds, and how often it was delivered before this copy."""
    values = dict(zip(flat[::2], flat[1::2], strict=True))
    body = values.get(b"body")
    if body is None:
        return _foreign(entry_id, values), 0
    headers = values.get(b"headers")
    content_type = values.get(b"content_type")
    timestamp = values.get(b"timestamp")
    return stored_message(
        body,
        values.get(b"routing_key", b"").decode(),
        decode_headers(headers.decode() if headers is not None else None),
        int(values.get(b"priority", b"0")),
        None,
        (values.get(b"id") or entry_id).decode(),
        float(timestamp) if timestamp is not None else entry_time(entry_id),
        content_type.decode() if content_type is not None else None,
    ), int(values.get(b"deliveries", b"0"))


def exchange_of(flat: Sequence[bytes]) -> str:
    for name, value in zip(flat[::2], flat[1::2], strict=True):
        if name == b"exchange":
            return value.decode()
    return ""


def _foreign(entry_id: bytes, values: dict[bytes, bytes]) -> Message:
    text = {
        name.decode(errors="replace"): value.decode(errors="replace")
        for name, value in values.items()
    }
    return stored_message(
        json.dumps(text, separators=(",", ":")).encode(),
        "",
        {},
        0,
        None,
        text.get("id", entry_id.decode()),
        entry_time(entry_id),
        "application/json",
    )


def entry_time(entry_id: bytes) -> float:
    """An entry id made by the server (``*``) starts with its time in milliseconds."""
    return int(entry_id.split(b"-", 1)[0]) / 1000
