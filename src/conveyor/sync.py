"""Blocking forms of the broker calls, for code that has no event loop."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

from conveyor._portal import Portal
from conveyor.brokers.types import Binding, Delivery, ExchangeSpec, QueueSpec, QueueStats
from conveyor.message import Message

if TYPE_CHECKING:
    from conveyor.brokers.base import Broker


class SyncBroker:
    """Blocking facade over a Broker; each call runs on a private background event loop."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._portal = Portal()

    def __enter__(self) -> Self:
        self._portal.call(self.broker.connect())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._portal.call(self.broker.close())
        finally:
            self._portal.close()

    def declare_queue(self, spec: QueueSpec) -> None:
        self._portal.call(self.broker.declare_queue(spec))

    def declare_exchange(self, spec: ExchangeSpec) -> None:
        self._portal.call(self.broker.declare_exchange(spec))

    def bind(self, binding: Binding) -> None:
        self._portal.call(self.broker.bind(binding))

    def publish(
        self, message: Message, *, exchange: str = "", mandatory: bool = False, delay: float = 0.0
    ) -> int:
        return self._portal.call(
            self.broker.publish(message, exchange=exchange, mandatory=mandatory, delay=delay)
        )

    def publish_batch(
        self,
        messages: Sequence[Message],
        *,
        exchange: str = "",
        mandatory: bool = False,
        delay: float = 0.0,
    ) -> list[int]:
        return self._portal.call(
            self.broker.publish_batch(messages, exchange=exchange, mandatory=mandatory, delay=delay)
        )

    def get(self, queue: str, *, lease_timeout: float | None = None) -> Delivery | None:
        return self._portal.call(self.broker.get(queue, lease_timeout=lease_timeout))

    def ack(self, delivery: Delivery) -> None:
        self._portal.call(self.broker.ack(delivery))

    def queue_stats(self, name: str) -> QueueStats:
        return self._portal.call(self.broker.queue_stats(name))
