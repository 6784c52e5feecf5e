"""The message envelope shared by every backend. Pure: no I/O."""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from conveyor.errors import DecodeError, MessageError

MAX_PRIORITY = 255


def new_message_id() -> str:
    """A time-ordered id: microseconds since the epoch, then 48 random bits, in hex.

    Unique without coordination between processes, and ordered by creation, so records
    keyed by it (job records) are written to neighbouring pages rather than random ones.
    """
    return f"{time.time_ns() // 1000:014x}{os.urandom(6).hex()}"


@dataclass(slots=True)
class Message:
    """What a producer publishes and a consumer receives.

    Args:
        body: the payload, already encoded (codecs turn objects into bytes).
        routing_key: how exchanges route it; for the default exchange, the queue name.
        headers: JSON-compatible metadata; ``x-death`` records dead-letter history.
        priority: 0-255, higher first, on queues declared with ``max_priority``.
        ttl: seconds the message may wait in a queue before it expires.
        id: unique id, kept across redeliveries and dead-lettering.
        timestamp: publish time, seconds since the epoch.

    Not frozen, like ``Delivery``: every message received is built anew, and a frozen
    dataclass costs several times as much to build. Publishing copies a message into the
    store, so changing one afterwards changes nothing that was sent.
    """

    body: bytes
    routing_key: str = ""
    headers: Mapping[str, Any] = field(default_factory=dict)
    priority: int = 0
    ttl: float | None = None
    id: str = field(default_factory=new_message_id)
    timestamp: float = field(default_factory=time.time)
    content_type: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.body, bytes | bytearray | memoryview):
            raise MessageError(
                f"message body must be bytes, not {type(self.body).__name__}; "
                "encode it first (e.g. json.dumps(obj).encode())"
            )
        if type(self.priority) is not int or not 0 <= self.priority <= MAX_PRIORITY:
            raise MessageError(f"priority must be an integer 0-255, not {self.priority!r}")
        if self.ttl is not None and not self.ttl >= 0:
            raise MessageError(f"ttl must be a number of seconds >= 0, not {self.ttl!r}")


_new = object.__new__


def stored_message(
    body: bytes,
    routing_key: str,
    headers: Mapping[str, Any],
    priority: int,
    ttl: float | None,
    id: str,
    timestamp: float,
    content_type: str | None,
) -> Message:
    """A message read back from a store, built without the checks ``Message()`` makes.

    It passed them when it was published; a lease of hundreds of messages would otherwise
    pay for them again on every one.
    """
    message = _new(Message)
    message.body = body
    message.routing_key = routing_key
    message.headers = headers
    message.priority = priority
    message.ttl = ttl
    message.id = id
    message.timestamp = timestamp
    message.content_type = content_type
    return message


_HEADER_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_ENCODED_HEADERS: dict[tuple[str, str], str] = {}
_ENCODED_HEADERS_MAX = 1024


def encode_headers(headers: Mapping[str, Any]) -> str | None:
    """Headers as compact JSON text, or None when there are none.

    Task messages carry one short header over and over (``{"task": "..."}``): one string
    header's text is kept, which saves an encode per message sent.
    """
    if not headers:
        return None
    if len(headers) == 1:
        ((name, value),) = headers.items()
        if type(name) is str and type(value) is str:
            known = _ENCODED_HEADERS.get((name, value))
            if known is None:
                known = _HEADER_ENCODER.encode(headers)
                if len(_ENCODED_HEADERS) < _ENCODED_HEADERS_MAX:
                    _ENCODED_HEADERS[name, value] = known
            return known
    try:
        return _HEADER_ENCODER.encode(headers)
    except (TypeError, ValueError) as exc:
        raise MessageError(
            f"message headers must be JSON-compatible (str, numbers, bools, None, lists, "
            f"dicts): {exc}"
        ) from exc


def decode_headers(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    if len(text) <= _CACHED_HEADERS_LENGTH:
        flat = _flat_headers(text)
        if flat is not None:
            return dict(flat)
    return _decode_headers(text)


# Task messages carry the same short headers over and over ({"task": "..."}): decoding
# them once saves a JSON parse per delivery. Only flat headers are cached, and each caller
# gets a dict of its own, so no caller can change what another sees.
_CACHED_HEADERS_LENGTH = 200


@functools.lru_cache(maxsize=512)
def _flat_headers(text: str) -> tuple[tuple[str, Any], ...] | None:
    headers = _decode_headers(text)
    if any(isinstance(value, dict | list) for value in headers.values()):
        return None
    return tuple(headers.items())


def _decode_headers(text: str) -> dict[str, Any]:
    try:
        headers = json.loads(text)
    except ValueError as exc:
        raise DecodeError(f"stored message headers are not valid JSON: {exc}") from exc
    if not isinstance(headers, dict):
        raise DecodeError("stored message headers are not a JSON object")
    return headers
