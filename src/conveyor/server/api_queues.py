"""Queues and exchanges: list and describe them, browse a queue, publish messages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from conveyor.brokers.capabilities import Capability
from conveyor.brokers.types import ExchangeSpec, ExchangeStats, QueueStats
from conveyor.errors import QueueNotFound, Unroutable
from conveyor.message import Message
from conveyor.server.schemas import (
    ExchangePublishRequest,
    PageQuery,
    PublishRequest,
    encode_body,
)
from conveyor.server.state import QueueView, ServerState, get_state
from conveyor.shapes import message_json

router = APIRouter(tags=["queues"])
State = Annotated[ServerState, Depends(get_state)]


def stats_json(stats: QueueStats) -> dict[str, Any]:
    return {
        "ready": stats.ready,
        "delayed": stats.delayed,
        "unacked": stats.unacked,
        "depth": stats.depth,
        "bytes": stats.bytes,
        "oldest_age": stats.oldest_age,
        "published": stats.published,
        "delivered": stats.delivered,
        "acked": stats.acked,
        "dead_lettered": stats.dead_lettered,
    }


def queue_json(view: QueueView) -> dict[str, Any]:
    options = view.spec.options()
    return {
        "name": view.spec.name,
        "options": {key: getattr(value, "value", value) for key, value in options.items()},
        "dead_letter_queue": view.dead_letter_queue,
        "is_dead_letter_queue": view.is_dead_letter_queue,
        "stats": stats_json(view.stats),
    }


def exchange_json(stats: ExchangeStats, spec: ExchangeSpec | None) -> dict[str, Any]:
    return {
        "name": stats.exchange,
        "default": stats.exchange == "",
        "type": None if stats.type is None else stats.type.value,
        "alternate_exchange": None if spec is None else spec.alternate_exchange,
        "bindings": [
            {"queue": b.queue, "routing_key": b.routing_key, "arguments": dict(b.arguments)}
            for b in stats.bindings or ()
        ],
        "unroutable": stats.unroutable,
    }


def _message(request: PublishRequest, routing_key: str) -> Message:
    body, content_type = encode_body(request.body, request.content_type)
    return Message(
        body,
        routing_key=routing_key,
        headers=request.headers,
        priority=request.priority,
        ttl=request.ttl,
        content_type=content_type,
    )


# queues


@router.get("/queues", summary="List queues with their statistics")
async def list_queues(state: State, paging: PageQuery) -> dict[str, Any]:
    specs = await state.queue_specs()
    views = await state.queue_views(paging.slice(specs))
    return paging.page([queue_json(view) for view in views], len(specs))


@router.get("/queues/{name}", summary="A queue's options and statistics")
async def describe_queue(name: str, state: State) -> dict[str, Any]:
    views = await state.queue_views([await state.queue_spec(name)])
    if not views:
        raise QueueNotFound(name)
    return queue_json(views[0])


@router.get("/queues/{name}/messages", summary="Browse a queue's messages without consuming")
async def browse_queue(name: str, state: State, paging: PageQuery) -> dict[str, Any]:
    """In delivery order, leased ones included; nothing is leased or changed."""
    broker = await state.broker()
    messages = await broker.browse(name, limit=paging.limit, offset=paging.offset)
    total = (await state.queue_stats(name)).at_least
    return paging.page([message_json(m) for m in messages], total)


@router.post("/queues/{name}/messages", status_code=202, summary="Publish a message to a queue")
async def publish_to_queue(name: str, request: PublishRequest, state: State) -> dict[str, Any]:
    """Through the default exchange; returns once the message is stored."""
    broker = await state.broker()
    message = _message(request, name)
    try:
        await broker.publish(message, mandatory=True, delay=request.delay)
    except Unroutable:
        raise QueueNotFound(name) from None
    state.cache.clear()
    return {"id": message.id, "queue": name}


# exchanges


async def _exchange_specs(state: ServerState) -> list[ExchangeSpec]:
    broker = await state.broker()
    if Capability.EXCHANGES not in broker.capabilities:
        return []
    return await broker.list_exchanges()


@router.get("/exchanges", summary="List exchanges with their bindings")
async def list_exchanges(state: State, paging: PageQuery) -> dict[str, Any]:
    """The default exchange (name ``""``, routing by queue name) comes first."""
    broker = await state.broker()
    specs: list[ExchangeSpec | None] = [None, *await _exchange_specs(state)]
    items = [
        exchange_json(await broker.exchange_stats(spec.name if spec else ""), spec)
        for spec in paging.slice(specs)
    ]
    return paging.page(items, len(specs))


@router.get("/exchanges/{name}", summary="An exchange's type, bindings and unroutable count")
async def describe_exchange(name: str, state: State) -> dict[str, Any]:
    broker = await state.broker()
    stats = await broker.exchange_stats(name)
    spec = next((s for s in await _exchange_specs(state) if s.name == name), None)
    return exchange_json(stats, spec)


@router.post(
    "/exchanges/{name}/messages", status_code=202, summary="Publish a message to an exchange"
)
async def publish_to_exchange(
    name: str, request: ExchangePublishRequest, state: State
) -> dict[str, Any]:
    """``routed`` counts the queues that took it; with ``mandatory``, none is a 409."""
    broker = await state.broker()
    message = _message(request, request.routing_key)
    routed = await broker.publish(
        message, exchange=name, mandatory=request.mandatory, delay=request.delay
    )
    state.cache.clear()
    return {
        "id": message.id,
        "exchange": name,
        "routing_key": request.routing_key,
        "routed": routed,
    }
