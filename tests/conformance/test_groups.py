"""Consumer groups as an application sees them, through ``open_group`` and ``open_assigned``:
members split the partitions and take over a leaver's, commits are where the next member
starts, seeks and pauses, and the group admin (describe, lag, reset, delete).

Every backend with groups runs these, whoever coordinates the group (the broker's own
store, or Kafka's brokers). Kafka brokers take seconds to form a group, so each test
joins as few groups as it can.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest

from conveyor import Broker, Capability
from conveyor.brokers.group_consumer import GroupConsumer
from conveyor.brokers.stream_types import (
    OffsetCommit,
    ProducerRecord,
    Record,
    TopicPartition,
    TopicSpec,
)
from conveyor.errors import ConfigError, MemberFenced, NoOffset

pytestmark = pytest.mark.needs(Capability.STREAMS, Capability.CONSUMER_GROUPS)

TANSU_NO_MEMBERS = pytest.mark.broker_fault(
    "kafka", "Tansu 0.6 answers DescribeGroups with no members, and the member id as assignor"
)
REBALANCE_TIMEOUT_S = 40.0
WAIT_S = 10.0
"""How long a poll that must return records may wait: a poll returns once it has some,
and a broker shared by the whole suite may take seconds to serve a new topic's first fetch."""


async def topic(broker: Broker, name: str, partitions: int = 4) -> list[TopicPartition]:
    await broker.create_topic(TopicSpec(name, partitions))
    return [TopicPartition(name, p) for p in range(partitions)]


async def produce_one_by_one(broker: Broker, name: str, *records: ProducerRecord) -> None:
    """One record per produce call, so every broker's end offsets are right."""
    for record in records:
        await broker.produce(name, [record])


async def poll_until(
    consumers: Sequence[GroupConsumer], done: Callable[[], bool], *, timeout: float = 10.0
) -> list[Record]:
    """Keep every member polling, each in a task of its own as an application runs them
    (rebalances go on in their polls), until ``done()``; returns what they read."""
    read: list[Record] = []

    async def keep_polling(consumer: GroupConsumer) -> None:
        while not done():
            read.extend(await consumer.poll(timeout=0.2))

    await asyncio.wait_for(asyncio.gather(*map(keep_polling, consumers)), timeout)
    return read


async def test_an_opened_group_consumer_reads_commits_and_resumes_from_its_commit(
    broker: Broker, name: str
) -> None:
    await topic(broker, name, partitions=2)
    await broker.produce(name, [ProducerRecord(f"v{i}".encode(), key=b"k") for i in range(3)])
    group = f"{name}-g"
    async with broker.open_group([name], group, auto_offset_reset="earliest") as consumer:
        read = await consumer.poll(timeout=WAIT_S)
        assert [r.value for r in read] == [b"v0", b"v1", b"v2"]
        await consumer.commit()
    await broker.produce(name, [ProducerRecord(b"v3", key=b"k")])
    async with broker.open_group([name], group, enable_auto_commit=False) as again:
        assert [r.value for r in await again.poll(timeout=WAIT_S)] == [b"v3"]


async def test_an_assigned_consumer_reads_only_its_partition_without_joining(
    broker: Broker, name: str
) -> None:
    partitions = await topic(broker, name, partitions=2)
    await broker.produce(name, [ProducerRecord(b"p0", partition=0)])
    await broker.produce(name, [ProducerRecord(b"p1", partition=1)])
    async with broker.open_assigned([(name, 1)], auto_offset_reset="earliest") as consumer:
        assert consumer.assignment() == {partitions[1]}
        assert [r.value for r in await consumer.poll(timeout=WAIT_S)] == [b"p1"]
        assert consumer.membership is None
    assert not [group for group in await broker.list_groups() if group.startswith(name)]


async def test_an_assigned_consumer_keeps_a_groups_offsets_and_seeks(
    broker: Broker, name: str
) -> None:
    (tp,) = await topic(broker, name, partitions=1)
    stamps = [1_700_000_000.0 + i for i in range(4)]
    await produce_one_by_one(
        broker, name, *(ProducerRecord(f"v{i}".encode(), timestamp=s) for i, s in enumerate(stamps))
    )
    group = f"{name}-g"
    async with broker.open_assigned(
        [tp], group=group, enable_auto_commit=False, auto_offset_reset="earliest"
    ) as consumer:
        assert consumer.position(tp) == 0
        assert [r.value for r in await consumer.poll(timeout=WAIT_S, max_records=2)] == [
            b"v0",
            b"v1",
        ]
        assert consumer.position(tp) == 2
        await consumer.commit()
        consumer.seek(tp, 3)
        assert [r.value for r in await consumer.poll(timeout=WAIT_S)] == [b"v3"]
        await consumer.seek_to_beginning(tp)
        assert [r.offset for r in await consumer.poll(timeout=WAIT_S)] == [0, 1, 2, 3]
        await consumer.seek_to_end()
        assert consumer.position(tp) == 4
        assert await consumer.poll(timeout=0.2) == []
        with pytest.raises(ConfigError, match="not assigned"):
            consumer.seek((name, 5), 0)
    assert await broker.committed_offsets(group, [tp]) == {tp: 2}


async def test_an_assigned_consumer_starts_from_its_groups_commit(
    broker: Broker, name: str, request: pytest.FixtureRequest
) -> None:
    if request.node.callspec.params["broker"] == "kafka-noida":
        pytest.skip(
            "noida-db 0.2.3 answers a new consumer's offset fetch without the group's "
            "commit about one run in four once other groups used the broker"
        )
    (tp,) = await topic(broker, name, partitions=1)
    await produce_one_by_one(broker, name, *(ProducerRecord(f"v{i}".encode()) for i in range(4)))
    group = f"{name}-g"
    await broker.commit_offsets(OffsetCommit(group, {tp: 2}))
    async with broker.open_assigned(
        [tp], group=group, enable_auto_commit=False, auto_offset_reset="none"
    ) as again:
        assert again.position(tp) == 2
        assert [r.value for r in await again.poll(timeout=WAIT_S)] == [b"v2", b"v3"]


@pytest.mark.broker_fault("kafka", "Tansu 0.6 answers every ListOffsets by time with offset 0")
async def test_seeking_to_a_time_starts_at_the_first_record_at_or_after_it(
    broker: Broker, name: str
) -> None:
    (tp,) = await topic(broker, name, partitions=1)
    stamps = [1_700_000_000.0 + i for i in range(3)]
    await produce_one_by_one(broker, name, *(ProducerRecord(b"v", timestamp=t) for t in stamps))
    async with broker.open_assigned([tp], auto_offset_reset="earliest") as consumer:
        await consumer.seek_to_time(stamps[1] - 0.5)
        assert consumer.position(tp) == 1
        await consumer.seek_to_time(datetime.fromtimestamp(stamps[2], UTC))
        assert [r.offset for r in await consumer.poll(timeout=WAIT_S)] == [2]
        await consumer.seek_to_time(stamps[2] + 60)
        assert consumer.position(tp) == 3


async def test_without_a_commit_the_reset_policy_decides_where_to_start(
    broker: Broker, name: str
) -> None:
    (tp,) = await topic(broker, name, partitions=1)
    await produce_one_by_one(broker, name, ProducerRecord(b"old"))
    with pytest.raises(NoOffset, match="no committed offset"):
        async with broker.open_assigned([tp], group=f"{name}-g", auto_offset_reset="none") as c:
            await c.poll(timeout=0.2)
    async with broker.open_assigned([tp], auto_offset_reset="latest") as latest:
        assert latest.position(tp) == 1
        await produce_one_by_one(broker, name, ProducerRecord(b"new"))
        assert [r.value for r in await latest.poll(timeout=WAIT_S)] == [b"new"]


async def test_a_paused_partition_is_not_read_until_resumed(broker: Broker, name: str) -> None:
    first, second = await topic(broker, name, partitions=2)
    await produce_one_by_one(
        broker, name, ProducerRecord(b"a0", partition=0), ProducerRecord(b"b0", partition=1)
    )
    async with broker.open_assigned([first, second], auto_offset_reset="earliest") as consumer:
        consumer.pause(second)
        assert consumer.paused() == {second}
        assert [r.value for r in await consumer.poll(timeout=1)] == [b"a0"]
        assert await consumer.poll(timeout=0.3) == []
        consumer.resume(second)
        assert consumer.paused() == set()
        assert [r.value for r in await consumer.poll(timeout=WAIT_S)] == [b"b0"]


async def test_members_split_the_partitions_and_a_leavers_move_to_the_others(
    broker: Broker, name: str
) -> None:
    partitions = await topic(broker, name, partitions=4)
    group = f"{name}-g"
    options = {"auto_offset_reset": "earliest", "enable_auto_commit": False}
    first = broker.open_group([name], group, **options)
    second = broker.open_group([name], group, **options)
    try:
        await asyncio.gather(first.start(), second.start())

        def split() -> bool:
            return len(first.assignment()) == len(second.assignment()) == 2

        await poll_until([first, second], split, timeout=REBALANCE_TIMEOUT_S)
        assert first.assignment() | second.assignment() == set(partitions)
        await produce_one_by_one(
            broker, name, *(ProducerRecord(b"x", partition=p) for p in range(4))
        )
        seen: dict[str, set[TopicPartition]] = {"first": set(), "second": set()}
        while sum(map(len, seen.values())) < 4:
            got = await asyncio.gather(first.poll(timeout=0.5), second.poll(timeout=0.5))
            for who, records in zip(seen, got, strict=True):
                seen[who] |= {r.topic_partition for r in records}
        assert seen == {"first": first.assignment(), "second": second.assignment()}
        await second.close()
        await poll_until([first], lambda: first.assignment() == set(partitions), timeout=40)
    finally:
        await asyncio.gather(first.close(), second.close())


@pytest.mark.broker_fault(
    "kafka-noida", "noida-db 0.2.3 refuses a commit made during a rebalance (ILLEGAL_GENERATION)"
)
async def test_on_revoke_commits_before_partitions_move_so_nothing_is_read_twice(
    broker: Broker, name: str
) -> None:
    partitions = await topic(broker, name, partitions=2)
    await produce_one_by_one(broker, name, *(ProducerRecord(b"x", partition=p) for p in (0, 1)))
    group = f"{name}-g"
    revoked: list[list[TopicPartition]] = []

    async def commit_then_let_go(partitions: list[TopicPartition]) -> None:
        revoked.append(partitions)
        await first.commit({tp: first.position(tp) for tp in partitions})

    first = broker.open_group(
        [name],
        group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        on_revoke=commit_then_let_go,
    )
    second = broker.open_group([name], group, auto_offset_reset="earliest")
    try:
        async with first:
            read = await first.poll(timeout=WAIT_S)
            while len(read) < 2:
                read += await first.poll(timeout=1)
            later = await poll_until(  # second joins in its first poll
                [first, second], lambda: bool(second.assignment()), timeout=REBALANCE_TIMEOUT_S
            )
            assert revoked
            assert set(revoked[0]) >= second.assignment()
            later += await second.poll(timeout=1)
            assert later == []  # the committed records are not read again
            committed = await broker.committed_offsets(group, partitions)
            assert {committed[tp] for tp in second.assignment()} == {1}
    finally:
        await second.close()


async def test_describe_shows_committed_and_end_offsets_and_lag(broker: Broker, name: str) -> None:
    partitions = await topic(broker, name, partitions=2)
    await produce_one_by_one(broker, name, *[ProducerRecord(b"v", partition=0)] * 5)
    group = f"{name}-g"
    async with broker.open_group([name], group, enable_auto_commit=False) as consumer:
        await consumer.commit({partitions[0]: 2, partitions[1]: 0})
    info = await broker.describe_group(group)
    assert (info.members, info.state) == ((), "Empty")
    lags = {(p.topic, p.partition): (p.committed, p.end, p.lag) for p in info.partitions}
    assert lags == {(name, 0): (2, 5, 3), (name, 1): (0, 0, 0)}
    assert info.lag == 3
    assert group in await broker.list_groups()
    await broker.delete_group(group)
    assert group not in await broker.list_groups()
    with pytest.raises(ConfigError, match="no consumer group"):
        await broker.describe_group(group)


@TANSU_NO_MEMBERS
async def test_describe_shows_live_members_and_refuses_to_delete_their_group(
    broker: Broker, name: str
) -> None:
    partitions = await topic(broker, name, partitions=2)
    group = f"{name}-g"
    async with broker.open_group([name], group) as consumer:
        await poll_until([consumer], lambda: len(consumer.assignment()) == 2)
        assert consumer.membership is not None
        info = await broker.describe_group(group)
        assert [(m.member_id, m.owned) for m in info.members] == [
            (consumer.membership.member_id, tuple(partitions))
        ]
        assert info.state == "Stable"
        assert [p.owner for p in info.partitions] == [consumer.membership.member_id] * 2
        with pytest.raises(ConfigError, match="active members"):
            await broker.delete_group(group)


async def test_offsets_reset_only_while_the_group_has_no_live_member(
    broker: Broker, name: str
) -> None:
    (tp,) = await topic(broker, name, partitions=1)
    await produce_one_by_one(broker, name, *[ProducerRecord(b"v")] * 3)
    group = f"{name}-g"
    await broker.commit_offsets(OffsetCommit(group, {tp: 3}))
    assert await broker.committed_offsets(group, [tp]) == {tp: 3}
    async with broker.open_group([name], group, enable_auto_commit=False) as consumer:
        await poll_until([consumer], lambda: bool(consumer.assignment()))
        assert consumer.position(tp) == 3
        with pytest.raises(MemberFenced):
            await broker.commit_offsets(OffsetCommit(group, {tp: 0}))
    await broker.commit_offsets(OffsetCommit(group, {tp: 1}))
    async with broker.open_group([name], group, enable_auto_commit=False) as again:
        await poll_until([again], lambda: bool(again.assignment()))
        assert [r.offset for r in await again.poll(timeout=WAIT_S)] == [1, 2]
