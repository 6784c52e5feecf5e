"""Message <-> AMQP: an ordinary AMQP message, readable by any AMQP client.

The body goes unchanged; ``id`` is ``message_id``, ``ttl`` is ``expiration`` (milliseconds
as text), ``priority``, ``content_type`` and ``timestamp`` are the AMQP properties, and
headers are AMQP headers. Messages are persistent. Message has no correlation id or reply
address yet, so the headers ``correlation-id`` and ``reply-to`` travel as the AMQP
properties ``correlation_id`` and ``reply_to`` and come back as those headers.

The AMQP timestamp holds whole seconds; the milliseconds ride in ``timestamp_in_ms``, the
header RabbitMQ's own timestamp plugin uses. Headers Conveyor adds for itself (delivery
counts, delay routing) and RabbitMQ's ``x-delivery-count`` are removed on reading, so a
message reads back with the headers it was published with.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from conveyor.brokers.rabbitmq import deaths
from conveyor.brokers.rabbitmq.arguments import milliseconds
from conveyor.brokers.rabbitmq.delays import MATCH_HEADER
from conveyor.message import Message, stored_message

PERSISTENT = 2
DELIVERIES = "x-conveyor-deliveries"
"""Deliveries before this copy, on a copy republished by ``nack(delay=...)``."""
TIMESTAMP_MS = "timestamp_in_ms"
QUORUM_COUNT = "x-delivery-count"
_PROPERTY_HEADERS = {"correlation-id": "correlation_id", "reply-to": "reply_to"}
_INTERNAL = (DELIVERIES, TIMESTAMP_MS, QUORUM_COUNT, MATCH_HEADER)


def properties(
    message: Message, *, extra_headers: Mapping[str, Any] | None = None, ttl: bool = True
) -> Basic.Properties:
    """The AMQP properties of ``message``; ``ttl=False`` leaves out its expiration."""
    headers = dict(message.headers)
    moved = {
        attribute: str(headers.pop(header))
        for header, attribute in _PROPERTY_HEADERS.items()
        if header in headers and headers[header] is not None
    }
    headers = deaths.write(headers)
    headers[TIMESTAMP_MS] = round(message.timestamp * 1000)
    if extra_headers:
        headers.update(extra_headers)
    return Basic.Properties(
        content_type=message.content_type,
        headers=headers,
        delivery_mode=PERSISTENT,
        priority=message.priority or None,
        correlation_id=moved.get("correlation_id"),
        reply_to=moved.get("reply_to"),
        expiration=str(milliseconds(message.ttl)) if ttl and message.ttl is not None else None,
        message_id=message.id,
        timestamp=datetime.datetime.fromtimestamp(int(message.timestamp), datetime.UTC),
    )


def read(delivered: DeliveredMessage) -> tuple[Message, int]:
    """The Message delivered, and how many times it has been delivered (this one included).

    Counting: a quorum queue says how often it handed the message out before
    (``x-delivery-count``); a classic queue only says whether it did (``redelivered``), so
    there a message redelivered several times counts 2. A copy that came back from a
    delayed retry adds the deliveries before it (``x-conveyor-deliveries``); once the
    message has been dead-lettered since, it starts again from 1.
    """
    props = delivered.header.properties
    raw = props.headers or {}
    headers: dict[str, Any] = deaths.plain(raw)
    exit_ = deaths.read(headers)
    for key in _INTERNAL:
        headers.pop(key, None)
    for header, attribute in _PROPERTY_HEADERS.items():
        value = getattr(props, attribute)
        if value is not None:
            headers[header] = value
    routing_key = delivered.routing_key or ""
    if exit_ is not None and exit_.routing_key is not None:
        routing_key = exit_.routing_key
    message = stored_message(
        body=delivered.body,
        routing_key=routing_key,
        headers=headers,
        priority=props.priority or 0,
        ttl=_ttl(props.expiration),
        id=props.message_id or derived_id(delivered.body, props, headers),
        timestamp=_timestamp(raw.get(TIMESTAMP_MS), props.timestamp),
        content_type=props.content_type,
    )
    carried = raw.get(DELIVERIES) if exit_ is not None else None
    before = carried if isinstance(carried, int) and carried > 0 else 0
    returned = raw.get(QUORUM_COUNT)
    if isinstance(returned, int) and not isinstance(returned, bool):
        return message, before + returned + 1
    redelivered = getattr(delivered.delivery, "redelivered", False)
    return message, before + (2 if redelivered else 1)


def derived_id(body: bytes, props: Basic.Properties, headers: Mapping[str, Any]) -> str:
    """A stable id for a message published without ``message_id`` (e.g. by another client).

    Derived from what survives redelivery and dead-lettering (body, the publisher's
    properties and headers, not the death history), so every delivery of that message has
    the same id. Two identical messages share one, which is all an id-less message allows.
    """
    lasting = {
        key: value
        for key, value in headers.items()
        if key != deaths.X_DEATH and key not in deaths.FIRST_DEATH
    }
    stamp = props.timestamp.timestamp() if props.timestamp is not None else None
    described = json.dumps(
        [props.content_type, props.app_id, props.message_type, stamp, lasting],
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(described.encode() + b"\0" + body).hexdigest()
    return f"amqp-{digest[:32]}"


def _ttl(expiration: str | None) -> float | None:
    if expiration is None:
        return None
    try:
        return int(expiration) / 1000
    except ValueError:
        return None


def _timestamp(milliseconds: Any, stamp: datetime.datetime | None) -> float:
    if isinstance(milliseconds, int) and not isinstance(milliseconds, bool):
        return milliseconds / 1000
    if stamp is not None:
        return deaths.plain(stamp)  # type: ignore[no-any-return]
    return time.time()
