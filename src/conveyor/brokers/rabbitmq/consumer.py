"""Reading one queue: pushed deliveries in a buffer, or a pull when nobody waits.

Each queue read by this broker has a channel of its own, so that acks go back on the
channel that delivered and a refusal about one queue (it was deleted) closes nothing
another queue depends on.

A receive that may wait starts a consumer (``basic.consume``) the first time, with a
prefetch of that receive's ``max_messages``; the server then pushes up to that many
unsettled messages ahead, and later receives take them from the buffer without a round
trip. The consumer stays until the broker closes or the queue is deleted: while it runs,
prefetched messages count as unacked on the server and no other consumer gets them, as
with any AMQP consumer, and the queue never counts as unused for ``x-expires``.

A receive that must not wait (``wait=0``, ``get``) asks the server with ``basic.get``:
the only way to learn "is a message ready now" without waiting for a push.

Buffered messages from a channel that has since closed are dropped, not handed out: the
server requeued them when the channel went, and delivers them again (redelivered).
"""

from __future__ import annotations

import asyncio
from collections import deque

from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic

from conveyor.brokers.rabbitmq.channels import Opener, Slot
from conveyor.brokers.rabbitmq.receipts import Ledger, Receipt

Received = tuple[DeliveredMessage, Receipt]


class QueueReader:
    def __init__(self, queue: str, opener: Opener) -> None:
        self.queue = queue
        self._slot = Slot(opener)
        self._buffer: deque[DeliveredMessage] = deque()
        self._arrived = asyncio.Event()
        self._consuming: AbstractChannel | None = None
        self._consumer_tag: str | None = None
        self._ledger: Ledger | None = None

    async def pull(self, max_messages: int) -> list[Received]:
        """What is buffered, or else what ``basic.get`` finds ready now (up to the max)."""
        taken = self._take(max_messages)
        if taken:
            return taken
        while len(taken) < max_messages:
            message = await self._slot.run(self._get, f"reading queue {self.queue!r}")
            if not isinstance(message.delivery, Basic.GetOk):
                break
            ledger, tag = self._ledger_for(message.channel), message.delivery.delivery_tag or 0
            ledger.opened(tag)
            taken.append((message, Receipt(ledger, tag)))
            if message.delivery.message_count == 0:
                break
        return taken

    async def take(self, max_messages: int, wait: float) -> list[Received]:
        """Buffered deliveries, waiting up to ``wait`` seconds for the first one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            taken = self._take(max_messages)
            if taken:
                return taken
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            await self._consume(max_messages)
            self._arrived.clear()
            if not self._buffer:
                try:
                    async with asyncio.timeout(remaining):
                        await self._arrived.wait()
                except TimeoutError:
                    return self._take(max_messages)

    async def close(self) -> None:
        self._buffer.clear()
        self._consuming = None
        await self._slot.close()

    def _take(self, max_messages: int) -> list[Received]:
        taken: list[Received] = []
        while self._buffer and len(taken) < max_messages:
            message = self._buffer.popleft()
            if not message.channel.is_closed:
                ledger = self._ledger_for(message.channel)
                taken.append((message, Receipt(ledger, message.delivery_tag or 0)))
        return taken

    def _ledger_for(self, channel: AbstractChannel) -> Ledger:
        if self._ledger is None or self._ledger.channel is not channel:
            self._ledger = Ledger(channel)
        return self._ledger

    async def _get(self, channel: AbstractChannel) -> DeliveredMessage:
        return await channel.basic_get(self.queue, no_ack=False)

    async def _consume(self, prefetch: int) -> None:
        """Start the consumer unless it runs; after a lost channel, on a new one."""
        current = self._slot.current
        if current is not None and current is self._consuming:
            return
        await self._slot.run(
            lambda channel: self._start(channel, prefetch), f"consuming queue {self.queue!r}"
        )

    async def _start(self, channel: AbstractChannel, prefetch: int) -> None:
        await channel.basic_qos(prefetch_count=prefetch)
        channel.on_consumer_cancel_callbacks.add(self._on_cancel)
        channel.closing.add_done_callback(lambda closing: self._on_closed(closing, channel))
        ok = await channel.basic_consume(self.queue, self._on_message, no_ack=False)
        self._consuming, self._consumer_tag = channel, ok.consumer_tag

    async def _on_message(self, message: DeliveredMessage) -> None:
        self._ledger_for(message.channel).opened(message.delivery_tag or 0)
        self._buffer.append(message)
        self._arrived.set()

    def _on_cancel(self, frame: Basic.Cancel) -> None:
        """The server cancelled the consumer: the queue was deleted."""
        if frame.consumer_tag == self._consumer_tag:
            self._consuming = None
        self._arrived.set()

    def _on_closed(self, closing: asyncio.Future[object], channel: AbstractChannel) -> None:
        if not closing.cancelled():
            closing.exception()
        if channel is self._consuming:
            self._consuming = None
        self._arrived.set()
