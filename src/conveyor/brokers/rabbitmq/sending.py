"""Publishing Conveyor messages: straight to an exchange, or through a delay queue.

A routed count is what AMQP can know: 1 when some queue took the message, 0 when none did
(the server returned it). AMQP does not say how many queues a fanout reached.

Batches are not atomic: when one message is unroutable (``mandatory``) or refused by a
full queue, the others of the batch are still stored; the error comes after all confirms.

Delayed publishes (see delays): through the default exchange the target queue is looked
up first, so the count and ``mandatory`` are as exact as without a delay. Through a named
exchange the message is routed only when the delay ends, so the count is 1 (held for
routing) and ``mandatory`` cannot be honoured: it is refused rather than ignored. A
message ``ttl`` cannot be combined with a delay: RabbitMQ would apply it inside the delay
queue, where an expiring message dead-letters to its target early instead of vanishing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from conveyor.brokers.rabbitmq import mapping
from conveyor.brokers.rabbitmq.delays import DELAY_EXCHANGE, MATCH_HEADER, DelayRoute
from conveyor.brokers.rabbitmq.publisher import Outcome, Outgoing, Publisher
from conveyor.brokers.rabbitmq.topology import Topology
from conveyor.brokers.types import Delivery
from conveyor.errors import BrokerError, ConfigError, QueueFull, Unroutable
from conveyor.message import Message

_Delayed = tuple[Message, DelayRoute, Mapping[str, Any]]


class Sender:
    def __init__(self, publisher: Publisher, topology: Topology) -> None:
        self._publisher = publisher
        self._topology = topology

    async def publish(
        self, messages: Sequence[Message], *, exchange: str, mandatory: bool, delay: float
    ) -> list[int]:
        if delay:
            return await self._publish_delayed(messages, exchange, mandatory, delay)
        batch = [
            Outgoing(exchange, m.routing_key, bytes(m.body), mapping.properties(m))
            for m in messages
        ]
        outcomes = await self._publisher.publish(batch)
        refused = [
            m for m, outcome in zip(messages, outcomes, strict=True) if outcome is Outcome.REFUSED
        ]
        if refused:
            raise self._full(exchange, refused[0])
        returned = [
            m for m, outcome in zip(messages, outcomes, strict=True) if outcome is Outcome.RETURNED
        ]
        if mandatory and returned:
            raise Unroutable(exchange, returned[0].routing_key)
        return [1 if outcome is Outcome.ROUTED else 0 for outcome in outcomes]

    async def retry_later(self, delivery: Delivery, delay: float) -> None:
        """Store a copy of the delivered message that comes back to its queue after
        ``delay``, carrying its delivery count (the caller then acks the original)."""
        route = DelayRoute.to_queue(delay, delivery.queue)
        await self._into_delay(
            [(delivery.message, route, {mapping.DELIVERIES: delivery.delivery_count})]
        )

    async def _publish_delayed(
        self, messages: Sequence[Message], exchange: str, mandatory: bool, delay: float
    ) -> list[int]:
        if any(message.ttl is not None for message in messages):
            raise ConfigError(
                "a delayed message cannot have a ttl on RabbitMQ: the ttl would run inside "
                "the delay queue; publish it without ttl, or without delay"
            )
        if exchange:
            if mandatory:
                raise ConfigError(
                    f"mandatory=True cannot be checked for a delayed publish through exchange "
                    f"{exchange!r}: RabbitMQ routes it when the delay ends. Publish without "
                    "mandatory, or through the default exchange"
                )
            await self._topology.exchange_exists(exchange)
            route = DelayRoute.to_exchange(delay, exchange)
            await self._into_delay([(message, route, {}) for message in messages])
            return [1] * len(messages)
        present = {}
        for key in dict.fromkeys(message.routing_key for message in messages):
            present[key] = await self._topology.exists(key)
        missing = [message for message in messages if not present[message.routing_key]]
        if mandatory and missing:
            raise Unroutable(exchange, missing[0].routing_key)
        routes = {key: DelayRoute.to_queue(delay, key) for key, found in present.items() if found}
        await self._into_delay(
            [(m, routes[m.routing_key], {}) for m in messages if m.routing_key in routes]
        )
        return [1 if present[message.routing_key] else 0 for message in messages]

    async def _into_delay(self, items: list[_Delayed]) -> None:
        """Publish into delay queues; declares them when due, and again if one expired."""
        for _attempt in (1, 2):
            for route in {route.queue: route for _, route, _ in items}.values():
                await self._topology.ensure_delay(route)
            batch = [
                Outgoing(
                    DELAY_EXCHANGE,
                    message.routing_key,
                    bytes(message.body),
                    mapping.properties(
                        message, extra_headers={MATCH_HEADER: route.queue, **extra}, ttl=False
                    ),
                )
                for message, route, extra in items
            ]
            outcomes = await self._publisher.publish(batch)
            if Outcome.REFUSED in outcomes:
                raise BrokerError("RabbitMQ refused a message for a delay queue (basic.nack)")
            items = [
                item
                for item, outcome in zip(items, outcomes, strict=True)
                if outcome is Outcome.RETURNED
            ]
            if not items:
                return
            self._topology.forget_delays()
        raise BrokerError(
            f"delay queue {items[0][1].queue!r} disappeared again right after it was declared; "
            "is something deleting Conveyor's delay queues?"
        )

    def _full(self, exchange: str, message: Message) -> QueueFull:
        if exchange:
            return QueueFull(
                f"bound to exchange {exchange!r} for key {message.routing_key!r}",
                "its max_length or max_bytes",
            )
        spec = self._topology.known_spec(message.routing_key)
        limits = []
        if spec is not None and spec.max_length is not None:
            limits.append(f"max_length={spec.max_length}")
        if spec is not None and spec.max_bytes is not None:
            limits.append(f"max_bytes={spec.max_bytes}")
        return QueueFull(message.routing_key, " and ".join(limits) or "max_length or max_bytes")
