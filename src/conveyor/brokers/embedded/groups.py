"""Consumer groups in the database: each step of ``group_state`` in one transaction.

A group's rows (``groups``, ``group_members``, ``group_partitions``) are loaded into a
GroupState, the step runs on it, and the rows that changed are written back, all inside
the caller's write transaction: the database is the coordinator. Committed offsets live in
``group_offsets``, beside the state.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from conveyor.assignors import TopicPartition
from conveyor.brokers.embedded import streams
from conveyor.brokers.group_state import (
    NOT_IN_GROUP,
    GroupState,
    MemberState,
    PartitionCounts,
    PartitionState,
)
from conveyor.brokers.stream_types import GroupInfo, Membership, OffsetCommit
from conveyor.errors import ConfigError, MemberFenced


class _Loaded:
    """A group as read, to write back only what a step changed."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        group_id: int,
        state: GroupState,
        topics: dict[int, streams.StoredTopic],
    ) -> None:
        self.connection = connection
        self.group_id = group_id
        self.state = state
        self.before = state.copy()
        self.ids = {t.spec.name: t.id for t in topics.values()}
        self.counts: PartitionCounts = {t.spec.name: t.spec.partitions for t in topics.values()}

    def save(self) -> None:
        state, before, group_id = self.state, self.before, self.group_id
        execute = self.connection.execute
        if (state.generation, state.assignor) != (before.generation, before.assignor):
            execute(
                "UPDATE groups SET generation = ?, assignor = ? WHERE id = ?",
                (state.generation, state.assignor, group_id),
            )
        for member_id in before.members.keys() - state.members.keys():
            execute(
                "DELETE FROM group_members WHERE group_id = ? AND member_id = ?",
                (group_id, member_id),
            )
        for member_id, member in state.members.items():
            if before.members.get(member_id) != member:
                execute(
                    "INSERT OR REPLACE INTO group_members (group_id, member_id, topics,"
                    " generation, session_timeout_ms, heartbeat_at_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        group_id,
                        member_id,
                        json.dumps(list(member.topics)),
                        member.generation,
                        member.session_timeout_ms,
                        member.heartbeat_at_ms,
                    ),
                )
        for tp in before.partitions.keys() - state.partitions.keys():
            if tp.topic in self.ids:
                execute(
                    "DELETE FROM group_partitions"
                    " WHERE group_id = ? AND topic_id = ? AND partition = ?",
                    (group_id, self.ids[tp.topic], tp.partition),
                )
        for tp, held in state.partitions.items():
            if before.partitions.get(tp) != held:
                execute(
                    "INSERT OR REPLACE INTO group_partitions (group_id, topic_id, partition,"
                    " assigned_to, owner) VALUES (?, ?, ?, ?, ?)",
                    (group_id, self.ids[tp.topic], tp.partition, held.assigned_to, held.owner),
                )


def _load(
    connection: sqlite3.Connection, name: str, *, create: str | None = None
) -> _Loaded | None:
    """The group's state; ``create`` (an assignor) makes a missing group instead of None."""
    row = connection.execute(
        "SELECT id, generation, assignor FROM groups WHERE name = ?", (name,)
    ).fetchone()
    if row is None:
        if create is None:
            return None
        connection.execute("INSERT INTO groups (name, assignor) VALUES (?, ?)", (name, create))
        return _load(connection, name)
    group_id, generation, assignor_name = row
    topics = streams.topics_by_id(connection)
    names = {t.id: t.spec.name for t in topics.values()}
    members = {
        member_id: MemberState(tuple(json.loads(topics)), member_generation, timeout, heartbeat)
        for member_id, topics, member_generation, timeout, heartbeat in connection.execute(
            "SELECT member_id, topics, generation, session_timeout_ms, heartbeat_at_ms"
            " FROM group_members WHERE group_id = ?",
            (group_id,),
        )
    }
    partitions = {
        TopicPartition(names[topic_id], partition): PartitionState(assigned_to, owner)
        for topic_id, partition, assigned_to, owner in connection.execute(
            "SELECT topic_id, partition, assigned_to, owner FROM group_partitions"
            " WHERE group_id = ?",
            (group_id,),
        )
        if topic_id in names
    }
    state = GroupState(name, assignor_name, generation, members, partitions)
    return _Loaded(connection, group_id, state, topics)


def _member(connection: sqlite3.Connection, name: str, member_id: str) -> _Loaded:
    loaded = _load(connection, name)
    if loaded is None:
        raise MemberFenced(name, member_id, NOT_IN_GROUP)
    return loaded


def join(
    connection: sqlite3.Connection,
    name: str,
    topics: Sequence[str],
    member_id: str | None,
    session_timeout_ms: int,
    assignor_name: str,
    now_ms: int,
) -> Membership:
    for topic in topics:
        streams.topic(connection, topic)  # TopicNotFound before anything changes
    loaded = _load(connection, name, create=assignor_name)
    assert loaded is not None
    membership = loaded.state.join(
        topics, member_id, session_timeout_ms, assignor_name, now_ms, loaded.counts
    )
    loaded.save()
    return membership


def heartbeat(
    connection: sqlite3.Connection,
    name: str,
    member_id: str,
    release: Sequence[TopicPartition],
    now_ms: int,
) -> Membership:
    loaded = _member(connection, name, member_id)
    membership = loaded.state.heartbeat(member_id, release, now_ms, loaded.counts)
    loaded.save()
    return membership


def leave(connection: sqlite3.Connection, name: str, member_id: str) -> None:
    loaded = _load(connection, name)
    if loaded is not None:
        loaded.state.leave(member_id, loaded.counts)
        loaded.save()


# offsets


def commit(connection: sqlite3.Connection, commit: OffsetCommit, now_ms: int) -> None:
    loaded = _load(connection, commit.group)
    if loaded is None:
        if commit.member_id is not None:
            raise MemberFenced(commit.group, commit.member_id, "the group does not exist")
        loaded = _load(connection, commit.group, create="range")
        assert loaded is not None
    loaded.state.check_commit(commit, now_ms, loaded.counts)
    loaded.save()
    connection.executemany(
        "INSERT OR REPLACE INTO group_offsets (group_id, topic_id, partition, offset,"
        " committed_at_ms) VALUES (?, ?, ?, ?, ?)",
        [
            (loaded.group_id, loaded.ids[topic], partition, offset, now_ms)
            for (topic, partition), offset in commit.offsets.items()
        ],
    )


def committed(
    connection: sqlite3.Connection, name: str, partitions: Sequence[TopicPartition] | None
) -> dict[TopicPartition, int]:
    row = connection.execute("SELECT id FROM groups WHERE name = ?", (name,)).fetchone()
    if row is None:
        return {}
    names = {t.id: t.spec.name for t in streams.topics_by_id(connection).values()}
    stored = {
        TopicPartition(names[topic_id], partition): offset
        for topic_id, partition, offset in connection.execute(
            "SELECT topic_id, partition, offset FROM group_offsets WHERE group_id = ?", row
        )
        if topic_id in names
    }
    if partitions is None:
        return stored
    return {tp: stored[tp] for tp in partitions if tp in stored}


def names(connection: sqlite3.Connection) -> list[str]:
    return [row[0] for row in connection.execute("SELECT name FROM groups ORDER BY name")]


def describe(connection: sqlite3.Connection, name: str, now_ms: int) -> GroupInfo:
    loaded = _load(connection, name)
    if loaded is None:
        raise ConfigError(f"there is no consumer group {name!r}; list them with list_groups")

    def end_offset(tp: TopicPartition) -> int:
        return streams.log_range(connection, loaded.ids[tp.topic], tp.partition)[1]

    return loaded.state.describe(now_ms, committed(connection, name, None), end_offset)


def delete(connection: sqlite3.Connection, name: str, now_ms: int) -> None:
    loaded = _load(connection, name)
    if loaded is None:
        return
    loaded.state.check_deletable(now_ms)
    for table in ("group_offsets", "group_partitions", "group_members"):
        connection.execute(f"DELETE FROM {table} WHERE group_id = ?", (loaded.group_id,))
    connection.execute("DELETE FROM groups WHERE id = ?", (loaded.group_id,))
