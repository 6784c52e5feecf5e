"""Windows that survive a restart: a window operator's state kept in a changelog topic.

The operators in windows/ hold their open windows in memory, and a consumer resumes at
its committed offsets, past the events of windows still open; without this, a restart
would start those windows again from what arrives next. As Kafka Streams does, a
WindowStore writes each partition's share of the state (``snapshot``) to a compacted
topic, ``<group>.<name>.changelog``, keyed by partition, every time it commits, and
just before: a partition's offsets are never committed past state that is not written.
Whichever consumer is given the partition next (after a crash, a restart or a
rebalance) restores its share before reading it.

Each snapshot records the last offset it counted, and the operator skips events at or
below it, so a crash between writing the snapshot and committing (or any replay) reads
those records again without counting them twice. A window that closed after the last
commit is reported again after a crash, with the same figures: reports are
at-least-once, state is exact.

Only the public Broker and GroupConsumer calls are used, so any backend with streams
and consumer groups can keep windows.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, NamedTuple

from conveyor.assignors import TopicPartition
from conveyor.brokers.base import Broker
from conveyor.brokers.group_consumer import GroupConsumer
from conveyor.brokers.stream_types import (
    CleanupPolicy,
    ProducerRecord,
    Record,
    TopicConfig,
    TopicSpec,
)
from conveyor.errors import ConfigError, DecodeError, MemberFenced
from conveyor.events.consumer import open_consumer
from conveyor.events.producer import Producer
from conveyor.events.windows import SlidingWindow, Snapshot, TumblingWindows, WindowResult
from conveyor.names import check_name

Windows = TumblingWindows | SlidingWindow

CHANGELOG_MAX_BYTES = 64 * 1024 * 1024
"""Largest snapshot of one partition: every open window's keys that it brought."""


class Batch(NamedTuple):
    """What one poll brought: ``records`` to feed to the windows, and ``closed``, the
    windows that closed meanwhile (partitions restored, handed over or caught up). Add
    what feeding the records closes to ``closed``, and report them all before the next
    batch: the next batch commits past them."""

    records: list[Record]
    closed: list[WindowResult]


class WindowStore:
    """Keeps ``windows`` (fed by one consumer of ``group``) in a changelog topic.

    Open the consumer through the store (``open_consumer``), so that it commits only
    with the snapshots and hands partitions over with their state, then read it with
    ``batches``. Feed each record with its partition and offset::

        windows.add(key, record.timestamp, partition=record.topic_partition,
                    offset=record.offset)

    Args:
        broker: where the consumed topics and the changelog live.
        windows: the operator, new (nothing added yet): its state comes from the changelog.
        group: the consumer group; the changelog is ``<group>.<name>.changelog``.
        name: this store's name within the group: a new name starts from empty windows.
    """

    def __init__(self, broker: Broker, windows: Windows, *, group: str, name: str) -> None:
        self.broker = broker
        self.windows = windows
        self.group = check_name("group", group)
        check_name("window store", name)
        self.changelog = check_name("changelog topic", f"{group}.{name}.changelog")
        self._producer = Producer(broker)
        self._consumer: GroupConsumer | None = None
        self._held: set[TopicPartition] = set()
        self._written: dict[TopicPartition, Snapshot] = {}
        self._closed: list[WindowResult] = []

    @property
    def consumer(self) -> GroupConsumer:
        if self._consumer is None:
            raise ConfigError("open the store's consumer first (WindowStore.open_consumer)")
        return self._consumer

    def open_consumer(
        self,
        topics: Sequence[str] = (),
        *,
        assign: Iterable[tuple[str, int]] = (),
        **options: Any,
    ) -> GroupConsumer:
        """A consumer of ``topics`` in the store's group (or of ``assign``-ed partitions,
        keeping the group's offsets), which commits only through the store.

        Takes the options of ``open_consumer`` except ``enable_auto_commit`` (a commit
        without the snapshots would skip state) and ``on_revoke`` (the store's own).
        """
        for taken in ("enable_auto_commit", "on_revoke", "group"):
            if taken in options:
                raise ConfigError(
                    f"a WindowStore's consumer sets {taken} itself; leave it out (the store "
                    "commits with its snapshots and hands partitions over with their state)"
                )
        if self._consumer is not None:
            raise ConfigError("this store has a consumer already; use one store per consumer")
        self._consumer = open_consumer(
            self.broker,
            topics,
            assign=assign,
            group=self.group,
            enable_auto_commit=False,
            on_revoke=self._hand_over,
            **options,
        )
        return self._consumer

    async def batches(
        self, *, timeout: float = 1.0, max_records: int | None = None
    ) -> AsyncIterator[Batch]:
        """Poll for ever, one Batch a poll; asking for the next one commits this one.

        Before each poll the store commits what the last batch fed (snapshots first),
        then marks the partitions that have nothing more to read as idle; after it,
        restores partitions newly assigned and forgets those taken away (fenced). Stop
        with ``break``; a batch not committed is read again after a restart.
        """
        consumer = self.consumer
        await self.broker.create_topic(
            TopicSpec(
                self.changelog,
                1,
                TopicConfig(
                    retention=None,
                    cleanup_policy=CleanupPolicy.COMPACT,
                    max_message_bytes=CHANGELOG_MAX_BYTES,
                ),
            )
        )
        first = True
        while True:
            if not first:
                with contextlib.suppress(MemberFenced):  # rejoined: its snapshots still hold
                    await self.commit()
            first = False
            self._closed += await self._mark_idle()
            records = await consumer.poll(timeout=timeout, max_records=max_records)
            closed, self._closed = self._closed, []
            closed += await self._follow()
            yield Batch(records, closed)

    async def save(self) -> dict[TopicPartition, int]:
        """Write the snapshots that changed since the last write; returns the offsets
        they cover (the consumer's positions), which the store commits next."""
        consumer = self.consumer
        held = sorted(self._held & consumer.assignment())  # a partition lost meanwhile: not ours
        offsets = {tp: consumer.position(tp) for tp in held}
        snapshots = self.windows.snapshot(held)
        changed = {tp: data for tp, data in snapshots.items() if self._written.get(tp) != data}
        if changed:
            await self._producer.send_batch(
                self.changelog,
                [
                    ProducerRecord(json.dumps(data, separators=(",", ":")).encode(), _key(tp))
                    for tp, data in changed.items()
                ],
            )
            self._written.update(changed)
        return offsets

    async def commit(self) -> None:
        """Write the changed snapshots, then commit the offsets they cover.

        Raises MemberFenced, as ``GroupConsumer.commit`` does; the snapshots written
        record their offsets, so whoever reads the partitions next skips what they hold.
        """
        offsets = await self.save()
        if offsets:
            await self.consumer.commit(offsets)

    async def _hand_over(self, revoked: list[TopicPartition]) -> None:
        """Partitions about to move: commit them with their state, then let it go."""
        with contextlib.suppress(MemberFenced):  # the new owner restores the last snapshot
            await self.commit()
        self._closed += self._release(revoked)

    async def _follow(self) -> list[WindowResult]:
        """Bring the windows to the consumer's assignment after a poll."""
        now = self.consumer.assignment()
        closed = self._release(self._held - now)
        new = now - self._held
        if new:
            found = await self._read_changelog(new)
            self.windows.assign(tp for tp in new if tp not in found)
            closed += self.windows.restore(found) or []
        self._held = now
        return closed

    def _release(self, partitions: Iterable[TopicPartition]) -> list[WindowResult]:
        gone = set(partitions) & self._held
        if not gone:
            return []
        self._held -= gone
        for tp in gone:
            self._written.pop(tp, None)
        return self.windows.release(gone) or []

    async def _mark_idle(self) -> list[WindowResult]:
        """Partitions read to their end stop holding the watermark back (until their
        next record), so the windows behind the others can close."""
        consumer = self.consumer
        if not self._held:
            return []
        ends = await self.broker.list_offsets(sorted(self._held & consumer.assignment()))
        closed: list[WindowResult] = []
        for tp, end in ends.items():
            if consumer.position(tp) >= end:
                closed += self.windows.idle(tp) or []
        return closed

    async def _read_changelog(self, partitions: set[TopicPartition]) -> dict[TopicPartition, Any]:
        """The latest snapshot of each of ``partitions`` that the changelog holds."""
        wanted = {_key(tp): tp for tp in partitions}
        log = TopicPartition(self.changelog, 0)
        start = (await self.broker.list_offsets([log], at="earliest"))[log]
        end = (await self.broker.list_offsets([log]))[log]
        found: dict[TopicPartition, Any] = {}
        while start < end and (records := await self.broker.fetch({log: start})):
            for record in records:
                tp = wanted.get(record.key or b"")
                if tp is not None and record.value is not None:
                    found[tp] = _decode(record)
            start = records[-1].offset + 1
        self._written.update(found)
        return found


def _key(tp: TopicPartition) -> bytes:
    return f"{tp.topic}/{tp.partition}".encode()


def _decode(record: Record) -> Any:
    try:
        return json.loads(record.value or b"")
    except ValueError as error:
        raise DecodeError(
            f"changelog record {record.topic}[{record.partition}]@{record.offset} is not "
            f"JSON ({error}); delete the changelog topic to start the windows afresh"
        ) from error
