"""Consumer groups on a Kafka cluster through confluent-kafka's AdminClient.

The brokers coordinate the groups themselves; this is their admin side: list, describe
(members, assignment, committed and end offsets, lag), delete, and offsets read and
reset. A reset (``commit_offsets`` without a member) is what Kafka's own tools do: the
brokers accept it only while the group has no live members.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
)
from confluent_kafka import TopicPartition as KafkaPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from conveyor.brokers.kafka.admin import INTERNAL_GROUP, TopicAdmin, error_of, wait
from conveyor.brokers.stream_types import (
    GroupInfo,
    GroupMember,
    OffsetCommit,
    PartitionLag,
    TopicPartition,
)
from conveyor.errors import ConfigError, MemberFenced

NOT_EMPTY = (KafkaError.NON_EMPTY_GROUP, KafkaError.UNKNOWN_MEMBER_ID)


class GroupAdmin:
    def __init__(self, admin: AdminClient, topics: TopicAdmin, timeout: float) -> None:
        self._admin = admin
        self.topics = topics
        self._timeout = timeout

    async def names(self) -> list[str]:
        future = self._admin.list_consumer_groups(request_timeout=self._timeout)
        listed = await wait(future)
        return sorted(
            found.group_id
            for found in listed.valid
            if not found.group_id.startswith(INTERNAL_GROUP)
        )

    async def describe(self, group: str) -> GroupInfo:
        (future,) = self._admin.describe_consumer_groups(
            [group], request_timeout=self._timeout
        ).values()
        try:
            found = await asyncio.wrap_future(future)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.GROUP_ID_NOT_FOUND:
                raise error_of(exc) from exc
            found = None
        committed = await self.committed(group)
        # Kafka forgets a group once it has neither members nor offsets
        gone = found is None or found.state == ConsumerGroupState.DEAD
        if gone or not (found.members or committed):
            raise ConfigError(f"there is no consumer group {group!r}; list them with list_groups")
        members = []
        owners: dict[TopicPartition, str] = {}
        for member in found.members:
            owned = tuple(
                sorted(
                    TopicPartition(p.topic, p.partition) for p in member.assignment.topic_partitions
                )
            )
            owners.update(dict.fromkeys(owned, member.member_id))
            topics = tuple(sorted({tp.topic for tp in owned}))
            members.append(GroupMember(member.member_id, topics, None, None, None, owned))
        partitions = sorted(set(committed) | set(owners))
        ends = await self.topics.offsets(partitions, OffsetSpec.latest())
        lags = tuple(
            PartitionLag(tp.topic, tp.partition, committed.get(tp), ends[tp], owners.get(tp))
            for tp in partitions
        )
        assignor = found.partition_assignor or ""
        return GroupInfo(group, None, assignor, tuple(sorted(members, key=_by_id)), lags)

    async def delete(self, group: str) -> None:
        """Forget the group and its offsets; refused while it has members."""
        (future,) = self._admin.delete_consumer_groups(
            [group], request_timeout=self._timeout
        ).values()
        try:
            await asyncio.wrap_future(future)
        except KafkaException as exc:
            code = exc.args[0].code()
            if code == KafkaError.GROUP_ID_NOT_FOUND:
                return
            if code in NOT_EMPTY:
                raise ConfigError(
                    f"group {group!r} has active members; stop them before deleting the group"
                ) from None
            raise error_of(exc) from exc

    async def committed(
        self, group: str, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        try:
            answer = await asyncio.wrap_future(self._fetch_offsets(group, partitions))
        except KafkaException as exc:
            return _unless_no_group(exc)
        return _offsets(answer)

    def committed_blocking(
        self, group: str, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """``committed`` for a consumer's thread (inside its rebalance callbacks)."""
        try:
            answer = self._fetch_offsets(group, partitions).result()
        except KafkaException as exc:
            return _unless_no_group(exc)
        return _offsets(answer)

    def _fetch_offsets(
        self, group: str, partitions: Sequence[TopicPartition] | None
    ) -> Future[Any]:
        asked = None if partitions is None else [KafkaPartition(*tp) for tp in partitions]
        request = ConsumerGroupTopicPartitions(group, asked)
        (future,) = self._admin.list_consumer_group_offsets(
            [request], request_timeout=self._timeout
        ).values()
        return future

    async def reset(self, commit: OffsetCommit) -> None:
        """Store offsets for a group with no live members (Kafka's offset reset)."""
        if commit.member_id is not None:
            raise ConfigError(
                "on kafka:// a member commits through its consumer (GroupConsumer.commit); "
                "commit_offsets only resets the offsets of a group with no live members"
            )
        await self.topics.check_partitions(list(commit.offsets))
        offsets = [KafkaPartition(t, p, o) for (t, p), o in commit.offsets.items()]
        request = ConsumerGroupTopicPartitions(commit.group, offsets)
        (future,) = self._admin.alter_consumer_group_offsets(
            [request], request_timeout=self._timeout
        ).values()
        try:
            answer = await asyncio.wrap_future(future)
        except KafkaException as exc:
            if exc.args[0].code() in NOT_EMPTY:
                raise MemberFenced(commit.group, "(reset)", "the group has active members") from exc
            raise error_of(exc) from exc
        for partition in answer.topic_partitions or []:
            if partition.error is not None:
                if partition.error.code() in NOT_EMPTY:
                    raise MemberFenced(commit.group, "(reset)", "the group has active members")
                raise error_of(KafkaException(partition.error))


def _by_id(member: GroupMember) -> str:
    return member.member_id


def _unless_no_group(exc: KafkaException) -> dict[TopicPartition, int]:
    if exc.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND:
        return {}
    raise error_of(exc) from exc


def _offsets(answer: Any) -> dict[TopicPartition, int]:
    """A group's committed offsets from an offset fetch; a partition's error is raised,
    never taken for "no commit"."""
    found: dict[TopicPartition, int] = {}
    for partition in answer.topic_partitions or []:
        if partition.error is not None:
            raise error_of(KafkaException(partition.error), topic=partition.topic)
        if partition.offset >= 0:
            found[TopicPartition(partition.topic, partition.partition)] = partition.offset
    return found
