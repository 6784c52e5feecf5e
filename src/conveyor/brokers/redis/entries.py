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


def message(entry_id: bytes, flat: Sequence[bytes]) -> tuple[Message, int, str]:
    """The message an entry holds, how often it was delivered before this copy, and the
    exchange it was published through."""
    if len(flat) >= 12 and flat[0] == b"id" and flat[2] == b"body" and flat[10] == b"timestamp":
        headers = content_type = None
        before = 0
        for index in range(12, len(flat), 2):
            name = flat[index]
            if name == b"headers":
                headers = flat[index + 1].decode()
            elif name == b"content_type":
                content_type = flat[index + 1].decode()
            elif name == b"deliveries":
                before = int(flat[index + 1])
        built = stored_message(
            flat[3],
            flat[5].decode(),
            decode_headers(headers),
            int(flat[9]),
            None,
            flat[1].decode(),
            float(flat[11]),
            content_type,
        )
        return built, before, flat[7].decode()
    return _parsed(entry_id, dict(zip(flat[::2], flat[1::2], strict=True)))


def _parsed(entry_id: bytes, values: dict[bytes, bytes]) -> tuple[Message, int, str]:
    """An entry whose fields are in another order, or that another client wrote."""
    body = values.get(b"body")
    if body is None:
        return _foreign(entry_id, values), 0, ""
    headers = values.get(b"headers")
    content_type = values.get(b"content_type")
    timestamp = values.get(b"timestamp")
    built = stored_message(
        body,
        values.get(b"routing_key", b"").decode(),
        decode_headers(headers.decode() if headers is not None else None),
        int(values.get(b"priority", b"0")),
        None,
        (values.get(b"id") or entry_id).decode(),
        float(timestamp) if timestamp is not None else entry_time(entry_id),
        content_type.decode() if content_type is not None else None,
    )
    return built, int(values.get(b"deliveries", b"0")), values.get(b"exchange", b"").decode()


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
