"""The streams and consumer-groups half of the embedded broker (mixed into EmbeddedBroker).

Appends wake fetchers waiting on the topic the same way publishes wake queue receivers:
through the ``waiters`` table and a datagram, on the channel ``-topic_id``. Retention and
compaction run in the background as short transactions, at most every
``retention_interval`` seconds, started by whichever process appends.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor.brokers.embedded import groups, retention, streams, wakeup
from conveyor.brokers.embedded.rows import now_ms
from conveyor.brokers.retention_timer import RetentionTimer
from conveyor.brokers.stream_types import (
    GroupInfo,
    Membership,
    OffsetCommit,
    ProducerBatch,
    ProducerRecord,
    Record,
    RecordMetadata,
    RetentionReport,
    TopicConfig,
    TopicInfo,
    TopicPartition,
    TopicSpec,
    check_join,
    check_max_records,
)
from conveyor.brokers.types import seconds
from conveyor.errors import ConfigError
from conveyor.partitioner import StickyPartitioner

if TYPE_CHECKING:
    from conveyor.brokers.embedded.db import Database

T = TypeVar("T")

RETENTION_STEP = 5_000  # deletions per retention transaction
PRODUCER_EXPIRY_MS = 7 * 86_400_000


class StreamMethods:
    """Needs ``_database()``, ``_notifier`` and ``options`` from the broker it is mixed into."""

    _notifier: wakeup.Notifier
    _retention_timer: RetentionTimer | None = None

    def _database(self) -> Database:
        raise NotImplementedError

    @property
    def _retention_interval(self) -> float:
        return float(self.options.retention_interval)  # type: ignore[attr-defined]

    @property
    def _poll_interval(self) -> float:
        return float(self.options.poll_interval)  # type: ignore[attr-defined]

    async def _stream_write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        gone = set(self._notifier.gone)

        def transaction(connection: sqlite3.Connection) -> T:
            if gone:
                wakeup.unregister(connection, gone)
            return work(connection)

        result = await self._database().write(transaction)
        self._notifier.gone -= gone
        return result

    async def _stream_read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._database().read(work)

    # topics

    async def create_topic(self, spec: TopicSpec) -> None:
        if (spec.replication_factor or 1) > 1:
            raise ConfigError(
                f"the embedded engine keeps one copy of each partition; topic {spec.name!r} "
                f"cannot have replication_factor={spec.replication_factor} (leave it out)"
            )
        await self._stream_write(lambda c: streams.create(c, spec, now_ms()))

    async def delete_topic(self, name: str) -> None:
        await self._stream_write(lambda c: streams.delete(c, name))

    async def list_topics(self) -> list[TopicSpec]:
        return await self._stream_read(streams.list_specs)

    async def describe_topic(self, name: str) -> TopicInfo:
        return await self._stream_read(lambda c: streams.describe(c, name))

    async def alter_topic(
        self, name: str, *, partitions: int | None = None, config: TopicConfig | None = None
    ) -> TopicSpec:
        if partitions is not None:
            TopicSpec(name, partitions)  # validates the count before the transaction
        return await self._stream_write(lambda c: streams.alter(c, name, partitions, config))

    # records

    async def _produce(
        self,
        topic: str,
        records: Sequence[ProducerRecord],
        *,
        batch: ProducerBatch | None,
        commit: OffsetCommit | None,
    ) -> list[RecordMetadata]:
        sticky = self._sticky()

        def work(connection: sqlite3.Connection) -> tuple[list[RecordMetadata], list[str]]:
            stored, metadata = streams.append(connection, topic, records, sticky, batch, now_ms())
            if commit is not None:
                groups.commit(connection, commit, now_ms())
            _, waiters = wakeup.version_and_waiters(connection, [-stored.id])
            return metadata, waiters

        metadata, waiters = await self._stream_write(work)
        if waiters:
            self._notifier.notify(waiters)
        self._schedule_retention()
        return metadata

    def _sticky(self) -> StickyPartitioner:
        sticky: StickyPartitioner | None = getattr(self, "_sticky_partitioner", None)
        if sticky is None:
            sticky = self._sticky_partitioner = StickyPartitioner()
        return sticky

    async def fetch(
        self,
        positions: Mapping[TopicPartition, int],
        *,
        max_records: int = 500,
        wait: float = 0.0,
    ) -> list[Record]:
        check_max_records(max_records)
        deadline = time.monotonic() + (seconds(wait, "wait") or 0.0)
        records, _ = await self._stream_read(lambda c: streams.read(c, positions, max_records))
        if records or not positions or deadline <= time.monotonic():
            return records
        signal = wakeup.WakeSignal()
        registered = False

        def register(connection: sqlite3.Connection) -> list[Record]:
            found, ids = streams.read(connection, positions, max_records)
            if found:
                wakeup.unregister(connection, [signal.address])
            else:
                for topic_id in ids:
                    wakeup.register(connection, signal.address, -topic_id)
            return found

        try:
            while True:
                records = await self._stream_write(register)
                registered = not records
                remaining = deadline - time.monotonic()
                if records or remaining <= 0:
                    return records
                await signal.wait(min(remaining, self._poll_interval))
        finally:
            signal.close()
            if registered:
                self._notifier.gone.add(signal.address)

    async def list_offsets(
        self, partitions: Sequence[TopicPartition], *, at: str | float = "latest"
    ) -> dict[TopicPartition, int]:
        return await self._stream_read(lambda c: streams.offsets_at(c, partitions, at))

    # retention

    async def enforce_retention(self, topic: str | None = None) -> RetentionReport:
        names = [topic] if topic is not None else [s.name for s in await self.list_topics()]
        deleted = compacted = tombstones = 0
        for name in names:
            more = True
            swept: set[int] = set()
            while more:

                def step(
                    connection: sqlite3.Connection, name: str = name, swept: set[int] = swept
                ) -> Any:
                    stored = streams.topic(connection, name)
                    return retention.enforce(connection, stored, now_ms(), RETENTION_STEP, swept)

                report, more = await self._stream_write(step)
                deleted += report.deleted
                compacted += report.compacted
                tombstones += report.tombstones
                await asyncio.sleep(0)  # let producers in between steps
        await self._stream_write(
            lambda c: streams.expire_producers(c, now_ms() - PRODUCER_EXPIRY_MS)
        )
        return RetentionReport(deleted, compacted, tombstones)

    def _schedule_retention(self) -> None:
        if self._retention_timer is None:
            self._retention_timer = RetentionTimer(self._retention_interval, self.enforce_retention)
        self._retention_timer.appended()

    async def _stop_retention(self) -> None:
        if self._retention_timer is not None:
            await self._retention_timer.stop()

    # consumer groups

    async def join_group(
        self,
        group: str,
        topics: Sequence[str],
        *,
        member_id: str | None = None,
        session_timeout: float = 10.0,
        assignor: str = "range",
    ) -> Membership:
        timeout_ms = check_join(group, topics, session_timeout, assignor)
        return await self._stream_write(
            lambda c: groups.join(c, group, topics, member_id, timeout_ms, assignor, now_ms())
        )

    async def heartbeat_group(
        self,
        group: str,
        member_id: str,
        *,
        release: Sequence[TopicPartition] = (),
    ) -> Membership:
        return await self._stream_write(
            lambda c: groups.heartbeat(c, group, member_id, release, now_ms())
        )

    async def leave_group(self, group: str, member_id: str) -> None:
        await self._stream_write(lambda c: groups.leave(c, group, member_id))

    async def commit_offsets(self, commit: OffsetCommit) -> None:
        await self._stream_write(lambda c: groups.commit(c, commit, now_ms()))

    async def committed_offsets(
        self, group: str, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        return await self._stream_read(lambda c: groups.committed(c, group, partitions))

    async def list_groups(self) -> list[str]:
        return await self._stream_read(groups.names)

    async def describe_group(self, group: str) -> GroupInfo:
        return await self._stream_read(lambda c: groups.describe(c, group, now_ms()))

    async def delete_group(self, group: str) -> None:
        await self._stream_write(lambda c: groups.delete(c, group, now_ms()))
