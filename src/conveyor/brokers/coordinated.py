"""The GroupConsumer of engines that coordinate groups in their own store (embedded now).

Membership, heartbeats and fenced commits are the broker's group calls (``join_group``,
``heartbeat_group``, ``commit_offsets``...), which a store that can run them atomically
answers. Positions (the next offset to read) live in the consumer; committing stores them
for the group. In a group, the consumer heartbeats from ``poll``: that is where it learns
of rebalances, commits what it read from partitions it must give up (with auto-commit, or
through ``on_revoke``) and releases them. A partition is read by one member at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from conveyor.assignors import TopicPartition
from conveyor.brokers.group_consumer import GroupConsumer, OffsetReset, Revoked, check_options
from conveyor.brokers.stream_types import Membership, OffsetCommit, Record
from conveyor.errors import ConfigError, MemberFenced, NoOffset, OffsetOutOfRange

if TYPE_CHECKING:
    from conveyor.brokers.base import Broker


class CoordinatedConsumer(GroupConsumer):
    """Kafka's consumer, on the Broker's group calls.

    Args:
        topics: topics to subscribe to, as a member of ``group`` (required with topics).
        assign: partitions to read by hand instead; no group membership.
        group: the consumer group whose committed offsets are used and stored.
        auto_offset_reset: where to start without a committed offset, or when the offset
            is out of range: "earliest", "latest", or "none" (raise NoOffset).
        enable_auto_commit: commit positions every ``auto_commit_interval`` seconds, on
            rebalance and on close (at-least-once: records are committed once polled again).
        session_timeout: silence after which the group removes this member.
        on_revoke: called with partitions about to move to another member, before they go;
            commit there when committing by hand.
    """

    def __init__(
        self,
        broker: Broker,
        topics: Sequence[str] = (),
        *,
        assign: Iterable[tuple[str, int]] = (),
        group: str | None = None,
        auto_offset_reset: OffsetReset = "latest",
        enable_auto_commit: bool = True,
        auto_commit_interval: float = 5.0,
        session_timeout: float = 10.0,
        heartbeat_interval: float | None = None,
        max_poll_records: int = 500,
        assignor: str = "range",
        on_revoke: Revoked | None = None,
    ) -> None:
        self.broker = broker
        self.topics = tuple(topics)
        self.group = group
        self._manual = [TopicPartition(*tp) for tp in assign]
        check_options(self.topics, self._manual, group, auto_offset_reset)
        self.auto_offset_reset = auto_offset_reset
        self.enable_auto_commit = enable_auto_commit and group is not None
        self.auto_commit_interval = auto_commit_interval
        self.session_timeout = session_timeout
        self.heartbeat_interval = heartbeat_interval or min(session_timeout / 3, 3.0)
        self.max_poll_records = max_poll_records
        self.assignor = assignor
        self.on_revoke = on_revoke
        self.membership: Membership | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._next_heartbeat = 0.0
        self._next_commit = time.monotonic() + auto_commit_interval
        self._started = False

    # lifecycle

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self._manual:
            await self._take(self._manual)
        else:
            await self._join()

    async def close(self) -> None:
        """Commit (with auto-commit) and leave the group, handing partitions over at once."""
        if not self._started:
            return
        self._started = False
        if self.enable_auto_commit:
            with contextlib.suppress(MemberFenced):  # the new owner re-reads from its commit
                await self.commit()
        if self.membership is not None:
            await self.broker.leave_group(self.membership.group, self.membership.member_id)
            self.membership = None

    async def _join(self) -> None:
        assert self.group is not None
        self.membership = await self.broker.join_group(
            self.group,
            self.topics,
            session_timeout=self.session_timeout,
            assignor=self.assignor,
        )
        self._positions.clear()
        await self._adopt(self.membership)

    # what this consumer reads

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer reads now."""
        return set(self._positions)

    def position(self, partition: tuple[str, int]) -> int:
        tp = TopicPartition(*partition)
        if tp not in self._positions:
            raise ConfigError(f"{tp.topic}[{tp.partition}] is not assigned to this consumer")
        return self._positions[tp]

    def seek(self, partition: tuple[str, int], offset: int) -> None:
        """Read ``partition`` from ``offset`` on the next poll."""
        self.position(partition)
        if offset < 0:
            raise ConfigError(f"offset must be >= 0, not {offset}")
        self._positions[TopicPartition(*partition)] = offset

    async def _seek_at(self, at: str | float, partitions: Sequence[tuple[str, int]]) -> None:
        chosen = [TopicPartition(*p) for p in partitions] or list(self._positions)
        for tp in chosen:
            self.position(tp)
        self._positions.update(await self.broker.list_offsets(chosen, at=at))

    def pause(self, *partitions: tuple[str, int]) -> None:
        """Stop fetching these partitions (membership and positions are kept)."""
        self._paused.update(TopicPartition(*p) for p in partitions)

    def resume(self, *partitions: tuple[str, int]) -> None:
        self._paused.difference_update(TopicPartition(*p) for p in partitions)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    # reading

    async def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[Record]:
        """Records from the assigned partitions, waiting up to ``timeout`` for the first.

        Positions move past what is returned; with auto-commit they are committed on a
        later poll, so a crash re-delivers at most what was polled since the last commit.
        """
        if not self._started:
            await self.start()
        deadline = time.monotonic() + timeout
        while True:
            await self._keep_membership()
            if self.enable_auto_commit and time.monotonic() >= self._next_commit:
                await self._auto_commit()
            readable = {tp: o for tp, o in self._positions.items() if tp not in self._paused}
            remaining = deadline - time.monotonic()
            wait = max(0.0, min(remaining, self._until_heartbeat()))
            records = await self._fetch(readable, max_records or self.max_poll_records, wait)
            if records or time.monotonic() >= deadline:
                return records

    async def _fetch(
        self, readable: dict[TopicPartition, int], max_records: int, wait: float
    ) -> list[Record]:
        if not readable:
            if wait > 0:
                await asyncio.sleep(wait)
            return []
        try:
            records = await self.broker.fetch(readable, max_records=max_records, wait=wait)
        except OffsetOutOfRange as error:
            tp = TopicPartition(error.topic, error.partition)
            self._positions[tp] = await self._reset(tp)
            return []
        for record in records:
            self._positions[TopicPartition(record.topic, record.partition)] = record.offset + 1
        return records

    # committing

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        """Store ``offsets`` (default: the current positions) as the group's progress.

        Raises MemberFenced if this member lost the partitions; it then rejoins on the
        next poll, and the new owner re-reads from the last good commit.
        """
        if self.group is None:
            raise ConfigError("committing needs a group; create the consumer with group=...")
        chosen = dict(self._positions if offsets is None else offsets)
        chosen = {tp: o for tp, o in chosen.items() if self._committed.get(tp) != o}
        if not chosen:
            return
        member = self.membership
        commit = OffsetCommit(
            self.group,
            chosen,
            member.member_id if member else None,
            member.generation if member else None,
        )
        try:
            await self.broker.commit_offsets(commit)
        except MemberFenced:
            self._next_heartbeat = 0.0
            raise
        self._committed.update(chosen)

    async def _auto_commit(self) -> None:
        self._next_commit = time.monotonic() + self.auto_commit_interval
        with contextlib.suppress(MemberFenced):  # we rejoin; uncommitted records come again
            await self.commit()

    # group membership

    def _until_heartbeat(self) -> float:
        if self.membership is None:
            return float("inf")
        if set(self.membership.assigned) != set(self.membership.owned):
            return 0.02  # partitions are moving: look again soon
        return self._next_heartbeat - time.monotonic()

    async def _keep_membership(self) -> None:
        member = self.membership
        if member is None:
            return
        moving = set(member.assigned) != set(member.owned)
        if not moving and time.monotonic() < self._next_heartbeat:
            return
        try:
            member = self.membership = await self.broker.heartbeat_group(
                member.group, member.member_id
            )
            if member.revoked:  # finish with them and hand them over at once
                release = await self._give_up(member.revoked)
                member = await self.broker.heartbeat_group(
                    member.group, member.member_id, release=release
                )
        except MemberFenced:
            await self._join()
            return
        self.membership = member
        await self._adopt(member)

    async def _give_up(self, revoked: Sequence[TopicPartition]) -> list[TopicPartition]:
        """Finish with partitions moving away: commit them, then hand them back."""
        if self.on_revoke is not None:
            await self.on_revoke(list(revoked))
        elif self.enable_auto_commit:
            await self.commit({tp: self._positions[tp] for tp in revoked if tp in self._positions})
        for tp in revoked:
            self._positions.pop(tp, None)
            self._paused.discard(tp)
        return list(revoked)

    async def _adopt(self, member: Membership) -> None:
        """Start reading newly owned partitions from the group's committed offsets."""
        self._next_heartbeat = time.monotonic() + self.heartbeat_interval
        readable = set(member.owned) - set(member.revoked)
        for tp in list(self._positions):
            if tp not in readable:
                self._positions.pop(tp)
        await self._take([tp for tp in readable if tp not in self._positions])

    async def _take(self, partitions: Sequence[TopicPartition]) -> None:
        if not partitions:
            return
        committed = (
            await self.broker.committed_offsets(self.group, partitions) if self.group else {}
        )
        self._committed.update(committed)
        for tp in partitions:
            self._positions[tp] = committed[tp] if tp in committed else await self._reset(tp)

    async def _reset(self, tp: TopicPartition) -> int:
        if self.auto_offset_reset == "none":
            raise NoOffset(self.group or "(none)", tp.topic, tp.partition)
        offsets = await self.broker.list_offsets([tp], at=self.auto_offset_reset)
        return offsets[tp]
