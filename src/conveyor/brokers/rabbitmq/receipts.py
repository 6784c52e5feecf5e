"""Delivery receipts, and settling them on the channel that delivered them.

A receipt is a channel's ledger and a delivery tag there. The ledger knows every tag the
channel has delivered and not yet settled (handed out or still buffered), so an ack of a
batch can use ``multiple=True`` for the run of tags that starts at the channel's oldest
unsettled one: one frame instead of one per message. Measured on this server, 5000
per-tag acks took the channel ~67 ms to process against ~4 ms for one multiple ack.
Tags outside that run are acked one by one (a multiple ack would take tags not asked
for, such as prefetched messages still in the buffer).

A delivery whose channel has closed cannot be settled: RabbitMQ put the message back
when the channel went. Settling reports it (False) instead of raising a client error.

AMQP confirms no ack, nack or reject. The channel handles its commands in order, so what
follows on the same channel (a basic.get of that queue) sees the settlement; ``fence``
waits until the server has handled it, for what follows on other channels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiormq.abc import AbstractChannel

from conveyor.brokers.rabbitmq import failures


class Ledger:
    """The unsettled delivery tags of one channel, oldest first."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        self._open: dict[int, None] = {}

    def opened(self, tag: int) -> None:
        self._open[tag] = None

    def closed(self, tag: int) -> None:
        self._open.pop(tag, None)

    def run_within(self, tags: set[int]) -> list[int]:
        """The oldest unsettled tags, in order, as far as all of them are in ``tags``."""
        run = []
        for tag in self._open:
            if tag not in tags:
                break
            run.append(tag)
        return run


@dataclass(slots=True, eq=False)
class Receipt:
    ledger: Ledger
    delivery_tag: int
    settled: bool = False

    @property
    def live(self) -> bool:
        return not self.settled and not self.ledger.channel.is_closed


async def ack_all(receipts: Iterable[Receipt]) -> list[Receipt]:
    """Ack every receipt it can; returns the ones that could not be (their channel is
    gone, or they were settled already)."""
    lost: list[Receipt] = []
    by_ledger: dict[Ledger, list[Receipt]] = {}
    for receipt in receipts:
        if receipt.live:
            by_ledger.setdefault(receipt.ledger, []).append(receipt)
        else:
            lost.append(receipt)
    for ledger, group in by_ledger.items():
        lost.extend(await _ack_on(ledger, group))
    return lost


async def settle(receipt: Receipt, how: str) -> bool:
    """``how`` is "ack", "requeue" or "reject" (dead-letters, or drops); False if the
    delivery can no longer be settled."""
    if not receipt.live:
        return False
    channel, tag = receipt.ledger.channel, receipt.delivery_tag
    try:
        if how == "ack":
            await channel.basic_ack(tag, wait=False)
        elif how == "requeue":
            await channel.basic_nack(tag, requeue=True, wait=False)
        else:
            await channel.basic_reject(tag, requeue=False, wait=False)
    except failures.CONNECTION_ERRORS:
        return False
    _done(receipt)
    return True


async def fence(receipt: Receipt) -> None:
    """Return once the server has handled every command sent on the receipt's channel."""
    try:
        await receipt.ledger.channel.exchange_declare("amq.direct", passive=True)
    except failures.CONNECTION_ERRORS:
        return


async def _ack_on(ledger: Ledger, group: list[Receipt]) -> list[Receipt]:
    by_tag = {receipt.delivery_tag: receipt for receipt in group}
    run = ledger.run_within(set(by_tag))
    try:
        if len(run) > 1:
            await ledger.channel.basic_ack(run[-1], multiple=True, wait=False)
            for tag in run:
                _done(by_tag.pop(tag))
        for tag, receipt in list(by_tag.items()):
            await ledger.channel.basic_ack(tag, wait=False)
            _done(receipt)
            del by_tag[tag]
    except failures.CONNECTION_ERRORS:
        return list(by_tag.values())
    return []


def _done(receipt: Receipt) -> None:
    receipt.settled = True
    receipt.ledger.closed(receipt.delivery_tag)
