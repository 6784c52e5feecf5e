"""Consumer groups on Redis: each step of ``group_state`` as one WATCH/MULTI transaction.

```
{prefix}group:{name}        string  the group's GroupState as JSON
{prefix}committed:{name}    hash    "{partition}:{topic}" -> the committed offset
{prefix}groups              set     every group's name
```

A step reads the group and the topics under WATCH, runs the shared rules in Python on
the server's clock (TIME, so members on hosts whose clocks disagree still agree on session
timeouts) and writes the state back in MULTI. If another member changed the group in
between, EXEC fails and the step runs again on what that member wrote.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import WatchError

from conveyor.assignors import TopicPartition
from conveyor.brokers.group_state import (
    NOT_IN_GROUP,
    GroupState,
    MemberState,
    PartitionCounts,
    PartitionState,
)
from conveyor.brokers.redis.connection import answer
from conveyor.brokers.redis.scripts import Call
from conveyor.brokers.redis.topics import TopicKeys
from conveyor.brokers.stream_types import GroupInfo, Membership, OffsetCommit, check_join
from conveyor.errors import ConfigError, MemberFenced

if TYPE_CHECKING:
    import redis.asyncio

    from conveyor.brokers.redis.broker import RedisConnection

T = TypeVar("T")

Step = Callable[[GroupState | None, PartitionCounts, int], tuple[GroupState | None, T]]
"""Given the stored group (None if there is none), the topics' partition counts and the
server's time in ms: the state to store (None: leave it) and what the call returns."""


class GroupKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.groups = f"{prefix}groups"

    def group(self, name: str) -> str:
        return f"{self.prefix}group:{name}"

    def committed(self, name: str) -> str:
        return f"{self.prefix}committed:{name}"


def encode_state(state: GroupState) -> str:
    return json.dumps(
        {
            "assignor": state.assignor,
            "generation": state.generation,
            "members": {
                member_id: [list(m.topics), m.generation, m.session_timeout_ms, m.heartbeat_at_ms]
                for member_id, m in state.members.items()
            },
            "partitions": [
                [tp.topic, tp.partition, held.assigned_to, held.owner]
                for tp, held in state.partitions.items()
            ],
        }
    )


def decode_state(name: str, text: str) -> GroupState:
    stored = json.loads(text)
    return GroupState(
        name,
        stored["assignor"],
        stored["generation"],
        {
            member_id: MemberState(tuple(topics), generation, timeout, heartbeat)
            for member_id, (topics, generation, timeout, heartbeat) in stored["members"].items()
        },
        {
            TopicPartition(topic, partition): PartitionState(assigned_to, owner)
            for topic, partition, assigned_to, owner in stored["partitions"]
        },
    )


def _field(tp: tuple[str, int]) -> str:
    return f"{tp[1]}:{tp[0]}"


def _partition_of(field: str) -> TopicPartition:
    partition, _, topic = field.partition(":")
    return TopicPartition(topic, int(partition))


def _commit_step(commit: OffsetCommit) -> Step[None]:
    def step(
        state: GroupState | None, counts: PartitionCounts, now_ms: int
    ) -> tuple[GroupState, None]:
        if state is None:
            if commit.member_id is not None:
                raise MemberFenced(commit.group, commit.member_id, "the group does not exist")
            state = GroupState(commit.group)
        state.check_commit(commit, now_ms, counts)
        return state, None

    return step


class RedisGroups:
    """The group calls of the Broker, coordinated in Redis."""

    if TYPE_CHECKING:  # RedisBroker has it

        def _running(self) -> RedisConnection: ...

    @property
    def _group_keys(self) -> GroupKeys:
        return GroupKeys(self._running().prefix)

    async def _transact(
        self,
        name: str,
        step: Step[T],
        writes: Callable[[redis.asyncio.client.Pipeline], None] | None = None,
    ) -> tuple[T, list[Any]]:
        """Run ``step`` on the stored group and store its state, with ``writes`` queued in
        the same MULTI; what the step returns, and the replies to the writes."""
        connection, keys = self._running(), self._group_keys
        topics = TopicKeys(connection.prefix).topics
        while True:
            with connection.endpoint.errors():
                async with connection.text.pipeline(transaction=True) as pipeline:
                    try:
                        await pipeline.watch(keys.group(name), topics)
                        text = await answer(pipeline.get(keys.group(name)))
                        counts = _counts(await answer(pipeline.hgetall(topics)))
                        seconds, micros = await answer(pipeline.time())
                        state = None if text is None else decode_state(name, text)
                        if state is not None:
                            state.forget_topics(counts)
                        save, result = step(state, counts, int(seconds) * 1000 + micros // 1000)
                        pipeline.multi()  # type: ignore[no-untyped-call]
                        if save is not None:
                            pipeline.set(keys.group(name), encode_state(save))
                            pipeline.sadd(keys.groups, name)
                        queued = len(pipeline.command_stack)
                        if writes is not None:
                            writes(pipeline)
                        replies = await pipeline.execute()
                        return result, replies[queued:]
                    except WatchError:
                        continue

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

        def step(
            state: GroupState | None, counts: PartitionCounts, now_ms: int
        ) -> tuple[GroupState, Membership]:
            state = state or GroupState(group, assignor)
            return state, state.join(topics, member_id, timeout_ms, assignor, now_ms, counts)

        membership, _ = await self._transact(group, step)
        return membership

    async def heartbeat_group(
        self,
        group: str,
        member_id: str,
        *,
        release: Sequence[TopicPartition] = (),
    ) -> Membership:
        def step(
            state: GroupState | None, counts: PartitionCounts, now_ms: int
        ) -> tuple[GroupState, Membership]:
            if state is None:
                raise MemberFenced(group, member_id, NOT_IN_GROUP)
            return state, state.heartbeat(member_id, release, now_ms, counts)

        membership, _ = await self._transact(group, step)
        return membership

    async def leave_group(self, group: str, member_id: str) -> None:
        def step(
            state: GroupState | None, counts: PartitionCounts, now_ms: int
        ) -> tuple[GroupState | None, None]:
            if state is not None:
                state.leave(member_id, counts)
            return state, None

        await self._transact(group, step)

    async def commit_offsets(self, commit: OffsetCommit) -> None:
        await self._commit(commit, None)

    async def _commit(self, commit: OffsetCommit, append: Call | None) -> Any:
        """Store the offsets if the group takes them, and run ``append`` (a produce) in the
        same transaction: its reply."""
        committed = self._group_keys.committed(commit.group)
        offsets = {_field(tp): offset for tp, offset in commit.offsets.items()}

        def writes(pipeline: redis.asyncio.client.Pipeline) -> None:
            if offsets:
                pipeline.hset(committed, mapping=offsets)
            if append is not None:
                script = append.script
                pipeline.eval(script.source, len(append.keys), *append.keys, *append.args)  # type: ignore[arg-type]

        _, replies = await self._transact(commit.group, _commit_step(commit), writes)
        return replies[-1] if append is not None else None

    async def committed_offsets(
        self, group: str, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        connection, keys = self._running(), self._group_keys
        with connection.endpoint.errors():
            async with connection.text.pipeline(transaction=True) as pipeline:
                pipeline.hgetall(keys.committed(group))
                pipeline.hgetall(TopicKeys(connection.prefix).topics)
                stored, topics = await pipeline.execute()
        counts = _counts(topics)
        offsets = {
            tp: int(offset)
            for field, offset in stored.items()
            if (tp := _partition_of(field)).partition < counts.get(tp.topic, 0)
        }
        if partitions is None:
            return offsets
        return {TopicPartition(*tp): offsets[tp] for tp in partitions if tp in offsets}

    async def list_groups(self) -> list[str]:
        connection = self._running()
        with connection.endpoint.errors():
            return sorted(await answer(connection.text.smembers(self._group_keys.groups)))

    async def describe_group(self, group: str) -> GroupInfo:
        connection, keys = self._running(), self._group_keys
        with connection.endpoint.errors():
            async with connection.text.pipeline(transaction=True) as pipeline:
                pipeline.get(keys.group(group))
                pipeline.hgetall(TopicKeys(connection.prefix).topics)
                pipeline.time()
                text, topics, (seconds, micros) = await pipeline.execute()
        if text is None:
            raise ConfigError(f"there is no consumer group {group!r}; list them with list_groups")
        state = decode_state(group, text)
        state.forget_topics(_counts(topics))
        offsets = await self.committed_offsets(group)
        ends = await self._ends(sorted(set(offsets) | set(state.partitions)))
        return state.describe(int(seconds) * 1000 + micros // 1000, offsets, ends.__getitem__)

    async def _ends(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        connection, keys = self._running(), TopicKeys(self._running().prefix)
        with connection.endpoint.errors():
            async with connection.text.pipeline(transaction=False) as pipeline:
                for topic, partition in partitions:
                    pipeline.hget(keys.offsets(topic), f"e{partition}")
                ends = await pipeline.execute()
        return {tp: int(end or 0) for tp, end in zip(partitions, ends, strict=True)}

    async def delete_group(self, group: str) -> None:
        keys = self._group_keys

        def step(
            state: GroupState | None, counts: PartitionCounts, now_ms: int
        ) -> tuple[None, None]:
            if state is not None:
                state.check_deletable(now_ms)
            return None, None

        def writes(pipeline: redis.asyncio.client.Pipeline) -> None:
            pipeline.delete(keys.group(group), keys.committed(group))
            pipeline.srem(keys.groups, group)

        await self._transact(group, step, writes)

    async def _forget_topic(self, topic: str) -> None:
        """After a topic is deleted: drop what every group held of it, and its offsets."""
        connection, keys = self._running(), self._group_keys
        with connection.endpoint.errors():
            names = await answer(connection.text.smembers(keys.groups))
        for name in names:
            with connection.endpoint.errors():
                fields = await answer(connection.text.hkeys(keys.committed(name)))
                gone = [f for f in fields if _partition_of(f).topic == topic]
                if gone:
                    await answer(connection.text.hdel(keys.committed(name), *gone))

            def step(
                state: GroupState | None, counts: PartitionCounts, now_ms: int
            ) -> tuple[GroupState | None, None]:
                return state, None  # loading forgot the topic; storing keeps that

            await self._transact(name, step)


def _counts(topics: dict[str, str]) -> dict[str, int]:
    return {name: json.loads(text)["partitions"] for name, text in topics.items()}
