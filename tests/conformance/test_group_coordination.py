"""Group coordination in the broker's own store: the group calls a CoordinatedConsumer makes
(join, heartbeat, leave), handoff without overlap, fencing by generation, and how describe
sees members. Backends whose brokers run a group protocol of their own (Kafka) do not
answer these calls; test_groups.py covers what every backend with groups does."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import Broker, Capability
from conveyor.brokers.stream_types import OffsetCommit, ProducerRecord, TopicPartition, TopicSpec
from conveyor.errors import ConfigError, MemberFenced, TopicNotFound

pytestmark = pytest.mark.needs(
    Capability.STREAMS, Capability.CONSUMER_GROUPS, Capability.GROUP_COORDINATION
)


async def topic(broker: Broker, name: str, partitions: int = 4) -> list[TopicPartition]:
    await broker.create_topic(TopicSpec(name, partitions))
    return [TopicPartition(name, p) for p in range(partitions)]


async def test_a_lone_member_owns_every_partition(broker: Broker, name: str) -> None:
    partitions = await topic(broker, name)
    member = await broker.join_group(f"{name}-g", [name])
    assert member.generation == 1
    assert member.assigned == member.owned == tuple(partitions)


async def test_a_joining_member_gets_partitions_only_once_released(
    broker: Broker, name: str
) -> None:
    await topic(broker, name)
    group = f"{name}-g"
    first = await broker.join_group(group, [name])
    second = await broker.join_group(group, [name])
    assert second.generation == first.generation + 1
    assert len(second.assigned) == 2
    assert second.owned == ()
    first = await broker.heartbeat_group(group, first.member_id)
    assert set(first.revoked) == set(second.assigned)
    first = await broker.heartbeat_group(group, first.member_id, release=first.revoked)
    second = await broker.heartbeat_group(group, second.member_id)
    assert second.owned == second.assigned
    assert set(first.owned) | set(second.owned) == set(first.assigned) | set(second.assigned)
    assert not set(first.owned) & set(second.owned)


async def test_a_silent_member_is_removed_and_fenced(broker: Broker, name: str) -> None:
    partitions = await topic(broker, name, 2)
    group = f"{name}-g"
    quiet = await broker.join_group(group, [name], session_timeout=0.2)
    alive = await broker.join_group(group, [name], session_timeout=30)
    await asyncio.sleep(0.3)
    alive = await broker.heartbeat_group(group, alive.member_id)
    assert alive.owned == tuple(partitions)
    with pytest.raises(MemberFenced):
        await broker.heartbeat_group(group, quiet.member_id)
    with pytest.raises(MemberFenced):
        await broker.commit_offsets(
            OffsetCommit(group, {partitions[0]: 1}, quiet.member_id, quiet.generation)
        )


async def test_a_silent_members_partitions_move_when_a_commit_is_the_first_to_notice(
    broker: Broker, name: str
) -> None:
    partitions = await topic(broker, name, 2)
    group = f"{name}-g"
    quiet = await broker.join_group(group, [name], session_timeout=0.2)
    alive = await broker.join_group(group, [name], session_timeout=30)
    quiet = await broker.heartbeat_group(group, quiet.member_id)
    await broker.heartbeat_group(group, quiet.member_id, release=quiet.revoked)
    alive = await broker.heartbeat_group(group, alive.member_id)
    (mine,) = alive.owned  # each holds one partition now
    await asyncio.sleep(0.3)
    await broker.commit_offsets(OffsetCommit(group, {mine: 1}, alive.member_id, alive.generation))
    alive = await broker.heartbeat_group(group, alive.member_id)
    assert alive.owned == tuple(partitions)


async def test_commits_need_ownership_and_the_current_generation(broker: Broker, name: str) -> None:
    partitions = await topic(broker, name, 2)
    group = f"{name}-g"
    member = await broker.join_group(group, [name])
    await broker.commit_offsets(
        OffsetCommit(group, {partitions[0]: 3}, member.member_id, member.generation)
    )
    assert await broker.committed_offsets(group) == {partitions[0]: 3}
    with pytest.raises(MemberFenced, match="stale"):
        await broker.commit_offsets(
            OffsetCommit(group, {partitions[0]: 4}, member.member_id, member.generation - 1)
        )
    with pytest.raises(MemberFenced, match="active members"):
        await broker.commit_offsets(OffsetCommit(group, {partitions[0]: 0}))
    assert await broker.committed_offsets(group) == {partitions[0]: 3}


async def test_leaving_hands_partitions_over_at_once(broker: Broker, name: str) -> None:
    partitions = await topic(broker, name, 3)
    group = f"{name}-g"
    first = await broker.join_group(group, [name])
    second = await broker.join_group(group, [name])
    await broker.leave_group(group, first.member_id)
    second = await broker.heartbeat_group(group, second.member_id)
    assert second.owned == tuple(partitions)


async def test_round_robin_groups_and_added_partitions(broker: Broker, name: str) -> None:
    await topic(broker, name, 2)
    group = f"{name}-g"
    member = await broker.join_group(group, [name], assignor="roundrobin")
    with pytest.raises(ConfigError, match="assignor"):
        await broker.join_group(group, [name], assignor="range")
    await broker.alter_topic(name, partitions=3)
    member = await broker.heartbeat_group(group, member.member_id)
    assert len(member.owned) == 3
    with pytest.raises(TopicNotFound):
        await broker.join_group(group, [f"{name}-missing"])


async def test_describe_shows_members_offsets_and_lag(broker: Broker, name: str) -> None:
    partitions = await topic(broker, name, 2)
    group = f"{name}-g"
    await broker.produce(name, [ProducerRecord(b"v", partition=0)] * 5)
    member = await broker.join_group(group, [name])
    await broker.commit_offsets(OffsetCommit(group, {partitions[0]: 2}, member.member_id))
    info = await broker.describe_group(group)
    assert info.state == "Stable"
    assert [m.member_id for m in info.members] == [member.member_id]
    lags = {(p.topic, p.partition): (p.committed, p.end, p.lag) for p in info.partitions}
    assert lags == {(name, 0): (2, 5, 3), (name, 1): (None, 0, 0)}
    assert info.lag == 3
    assert group in await broker.list_groups()
    with pytest.raises(ConfigError, match="active members"):
        await broker.delete_group(group)
    await broker.leave_group(group, member.member_id)
    await broker.delete_group(group)
    assert group not in await broker.list_groups()


async def test_describe_leaves_out_members_past_their_session_timeout(
    broker: Broker, name: str
) -> None:
    await topic(broker, name, 2)
    group = f"{name}-g"
    await broker.join_group(group, [name], session_timeout=0.1)
    await asyncio.sleep(0.2)
    info = await broker.describe_group(group)
    assert info.members == ()
    assert info.state == "Empty"
    assert [p.owner for p in info.partitions] == [None, None]
