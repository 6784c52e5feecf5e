"""Confirmed publishing: a whole batch on the wire, then all its confirms at once.

Every message goes out ``mandatory``, so the server says for each one whether any queue
took it (``basic.return`` comes before the confirm when none did) or whether a queue
refused it (``basic.nack``: a full ``reject-publish`` queue). Waiting for the confirms
together costs one round trip per batch, not per message.

Each batch has a channel of its own while it is in flight (channels are pooled): a
publish to a missing exchange closes its channel, and must not fail someone else's
messages. When the connection drops, what was confirmed is stored; the rest is published
again once the connection is back, so a message may be stored twice (at least once).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import aiormq.exceptions as amqp
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic

from conveyor.brokers.rabbitmq import failures
from conveyor.brokers.rabbitmq.channels import RETRY_PAUSE, Opener, Slot
from conveyor.errors import MessageError


class Outcome(Enum):
    ROUTED = "routed"
    """Stored in at least one queue (or taken by an alternate exchange)."""
    RETURNED = "returned"
    """No queue took it: the server handed it back (nothing stored)."""
    REFUSED = "refused"
    """A queue refused it (``basic.nack``): a full queue with overflow reject-publish."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    exchange: str
    routing_key: str
    body: bytes
    properties: Basic.Properties


class _Lost(Exception):
    """The connection dropped before the server confirmed this message."""


class Publisher:
    def __init__(self, opener: Opener) -> None:
        self._opener = opener
        self._free: list[Slot] = []
        self._slots: list[Slot] = []

    async def publish(self, batch: Sequence[Outgoing]) -> list[Outcome]:
        """The outcome of each message, in order; raises only when the outcome is unknown
        for good (BrokerUnavailable) or the server refused the whole command (such as
        ExchangeNotFound)."""
        outcomes: list[Outcome | None] = [None] * len(batch)
        pending = list(range(len(batch)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._opener.timeout
        while pending:
            slot = self._free.pop() if self._free else self._new_slot()
            try:
                results = await self._send(slot, [batch[i] for i in pending])
            finally:
                if slot.current is not None:
                    self._free.append(slot)
            lost = []
            for index, result in zip(pending, results, strict=True):
                if isinstance(result, Outcome):
                    outcomes[index] = result
                else:
                    lost.append(index)
            if lost and loop.time() >= deadline:
                raise failures.unavailable(
                    self._opener.endpoint,
                    None,
                    f"publishing ({len(batch) - len(lost)} of {len(batch)} messages confirmed)",
                )
            if lost:
                await asyncio.sleep(RETRY_PAUSE)
            pending = lost
        return [outcome for outcome in outcomes if outcome is not None]

    async def close(self) -> None:
        slots, self._slots, self._free = self._slots, [], []
        for slot in slots:
            await slot.close()

    def _new_slot(self) -> Slot:
        slot = Slot(self._opener, confirms=True)
        self._slots.append(slot)
        return slot

    async def _send(self, slot: Slot, batch: Sequence[Outgoing]) -> list[Outcome | _Lost]:
        try:
            channel = await slot.get()
        except failures.CONNECTION_ERRORS:
            return [_Lost() for _ in batch]
        results: list[Outcome | _Lost] = []
        for chunk in _unique_ids(batch):
            results.extend(await self._send_chunk(slot, channel, chunk))
        return results

    async def _send_chunk(
        self, slot: Slot, channel: AbstractChannel, chunk: Sequence[Outgoing]
    ) -> list[Outcome | _Lost]:
        tasks = [
            asyncio.ensure_future(
                channel.basic_publish(
                    item.body,
                    exchange=item.exchange,
                    routing_key=item.routing_key,
                    properties=item.properties,
                    mandatory=True,
                )
            )
            for item in chunk
        ]
        limit = self._opener.timeout + len(chunk) / 1000
        try:
            async with asyncio.timeout(limit):
                answers = await asyncio.gather(*tasks, return_exceptions=True)
        except TimeoutError:
            slot.discard()
            raise failures.unavailable(
                self._opener.endpoint, None, "waiting for publisher confirms"
            ) from None
        results = []
        for answer in answers:
            if isinstance(answer, failures.REFUSALS):
                slot.discard()
                raise failures.refusal(answer)
            results.append(_outcome(answer))
        if any(isinstance(result, _Lost) for result in results):
            slot.discard()
        return results


def _outcome(answer: object) -> Outcome | _Lost:
    if isinstance(answer, Basic.Ack):
        return Outcome.ROUTED
    if isinstance(answer, DeliveredMessage):
        return Outcome.RETURNED
    if isinstance(answer, amqp.DeliveryError) and isinstance(answer.frame, Basic.Nack):
        return Outcome.REFUSED
    if isinstance(answer, TypeError | ValueError | OverflowError | struct.error):
        raise MessageError(f"the message cannot be sent over AMQP: {answer}") from answer
    return _Lost()


def _unique_ids(batch: Sequence[Outgoing]) -> list[list[Outgoing]]:
    """The batch cut where a message id repeats: the client matches a returned message to
    its publish by id, so ids must be unique among the messages in flight."""
    chunks: list[list[Outgoing]] = [[]]
    seen: set[str | None] = set()
    for item in batch:
        if item.properties.message_id in seen:
            chunks.append([])
            seen.clear()
        seen.add(item.properties.message_id)
        chunks[-1].append(item)
    return chunks
