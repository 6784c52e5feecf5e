"""Consumer groups: membership, rebalancing, partition handoff and committed offsets.

The database is the coordinator: every member's join, heartbeat and leave is a transaction
that also removes members silent past their session timeout. Any change of membership (or
of the subscribed topics' partition counts) starts a new generation and recomputes the
assignment with the group's assignor.

A partition changes hands in two steps. ``assigned_to`` is who the current generation
gives it to; ``owner`` is who may read it now. The old owner keeps it until it has finished
and committed what it read, and releases it on its next heartbeat (or is removed for
silence); only then does the new member own it. So no partition is ever read by two
members at once, and per-key order holds across rebalances.

A commit is accepted from a member that is still in the group, at the generation it last
heard of, for partitions it owns: a member that was removed, or that acts on a stale
generation, is fenced out.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Sequence

from conveyor.assignors import TopicPartition, assignor
from conveyor.brokers.embedded import streams
from conveyor.brokers.stream_types import (
    GroupInfo,
    GroupMember,
    Membership,
    OffsetCommit,
    PartitionLag,
)
from conveyor.errors import ConfigError, MemberFenced, TopicNotFound

NOT_IN_GROUP = "it is not in the group (it left, or missed its session timeout)"


def _group(connection: sqlite3.Connection, name: str) -> tuple[int, int, str] | None:
    row = connection.execute(
        "SELECT id, generation, assignor FROM groups WHERE name = ?", (name,)
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


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
    group = _group(connection, name)
    if group is None:
        connection.execute(
            "INSERT INTO groups (name, assignor) VALUES (?, ?)", (name, assignor_name)
        )
        group = _group(connection, name)
        assert group is not None
    group_id, _, current_assignor = group
    if current_assignor != assignor_name:
        if _member_count(connection, group_id):
            raise ConfigError(
                f"group {name!r} uses the {current_assignor!r} assignor; its members must all "
                f"use it, not {assignor_name!r}"
            )
        connection.execute("UPDATE groups SET assignor = ? WHERE id = ?", (assignor_name, group_id))
    member_id = member_id or f"member-{secrets.token_hex(6)}"
    connection.execute(
        "INSERT OR REPLACE INTO group_members (group_id, member_id, topics, generation,"
        " session_timeout_ms, heartbeat_at_ms) VALUES (?, ?, ?, 0, ?, ?)",
        (group_id, member_id, json.dumps(sorted(set(topics))), session_timeout_ms, now_ms),
    )
    _expire_members(connection, group_id, now_ms)
    _rebalance(connection, group_id)
    return _membership(connection, name, group_id, member_id)


def heartbeat(
    connection: sqlite3.Connection,
    name: str,
    member_id: str,
    release: Sequence[TopicPartition],
    now_ms: int,
) -> Membership:
    group_id = _member_group(connection, name, member_id)
    expired = _expire_members(connection, group_id, now_ms)
    if expired or _subscriptions_changed(connection, group_id):
        _rebalance(connection, group_id)
    connection.execute(
        "UPDATE group_members SET heartbeat_at_ms = ? WHERE group_id = ? AND member_id = ?",
        (now_ms, group_id, member_id),
    )
    ids = {t.spec.name: t.id for t in streams.topics_by_id(connection).values()}
    connection.executemany(
        "UPDATE group_partitions SET owner = assigned_to"
        " WHERE group_id = ? AND topic_id = ? AND partition = ? AND owner = ?",
        [
            (group_id, ids[topic], partition, member_id)
            for topic, partition in release
            if topic in ids
        ],
    )
    _hand_over(connection, group_id)
    return _membership(connection, name, group_id, member_id)


def leave(connection: sqlite3.Connection, name: str, member_id: str) -> None:
    group = _group(connection, name)
    if group is None:
        return
    connection.execute(
        "DELETE FROM group_members WHERE group_id = ? AND member_id = ?", (group[0], member_id)
    )
    _forget_owner(connection, group[0], [member_id])
    _rebalance(connection, group[0])


def _member_group(connection: sqlite3.Connection, name: str, member_id: str) -> int:
    group = _group(connection, name)
    if (
        group is None
        or not connection.execute(
            "SELECT 1 FROM group_members WHERE group_id = ? AND member_id = ?",
            (group[0], member_id),
        ).fetchone()
    ):
        raise MemberFenced(name, member_id, NOT_IN_GROUP)
    return group[0]


def _member_count(connection: sqlite3.Connection, group_id: int) -> int:
    (count,) = connection.execute(
        "SELECT count(*) FROM group_members WHERE group_id = ?", (group_id,)
    ).fetchone()
    return int(count)


def _expire_members(connection: sqlite3.Connection, group_id: int, now_ms: int) -> list[str]:
    expired = [
        row[0]
        for row in connection.execute(
            "DELETE FROM group_members WHERE group_id = ?"
            " AND heartbeat_at_ms + session_timeout_ms < ? RETURNING member_id",
            (group_id, now_ms),
        )
    ]
    _forget_owner(connection, group_id, expired)
    return expired


def _forget_owner(connection: sqlite3.Connection, group_id: int, members: Sequence[str]) -> None:
    connection.executemany(
        "UPDATE group_partitions SET owner = NULL WHERE group_id = ? AND owner = ?",
        [(group_id, member) for member in members],
    )


def _subscriptions(connection: sqlite3.Connection, group_id: int) -> dict[str, list[str]]:
    return {
        member: json.loads(topics)
        for member, topics in connection.execute(
            "SELECT member_id, topics FROM group_members WHERE group_id = ?", (group_id,)
        )
    }


def _subscriptions_changed(connection: sqlite3.Connection, group_id: int) -> bool:
    """Did a subscribed topic gain partitions (or vanish) since the last assignment?"""
    topics = {t for ts in _subscriptions(connection, group_id).values() for t in ts}
    wanted = sum(
        t.spec.partitions
        for t in streams.topics_by_id(connection).values()
        if t.spec.name in topics
    )
    (assigned,) = connection.execute(
        "SELECT count(*) FROM group_partitions WHERE group_id = ? AND assigned_to IS NOT NULL",
        (group_id,),
    ).fetchone()
    return bool(wanted != assigned)


def _rebalance(connection: sqlite3.Connection, group_id: int) -> None:
    """A new generation: assign every subscribed partition to one member."""
    (assignor_name,) = connection.execute(
        "SELECT assignor FROM groups WHERE id = ?", (group_id,)
    ).fetchone()
    connection.execute("UPDATE groups SET generation = generation + 1 WHERE id = ?", (group_id,))
    subscriptions = _subscriptions(connection, group_id)
    by_name = {t.spec.name: t for t in streams.topics_by_id(connection).values()}
    counts = {
        topic: by_name[topic].spec.partitions
        for topics in subscriptions.values()
        for topic in topics
        if topic in by_name
    }
    plan = assignor(assignor_name)(subscriptions, counts) if subscriptions else {}
    connection.execute(
        "UPDATE group_partitions SET assigned_to = NULL WHERE group_id = ?", (group_id,)
    )
    connection.executemany(
        "INSERT INTO group_partitions (group_id, topic_id, partition, assigned_to)"
        " VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET assigned_to = excluded.assigned_to",
        [
            (group_id, by_name[topic].id, partition, member)
            for member, assigned in plan.items()
            for topic, partition in assigned
        ],
    )
    connection.execute(
        "DELETE FROM group_partitions WHERE group_id = ? AND assigned_to IS NULL AND owner IS NULL",
        (group_id,),
    )
    _hand_over(connection, group_id)


def _hand_over(connection: sqlite3.Connection, group_id: int) -> None:
    """Partitions nobody owns go to the member they are assigned to."""
    connection.execute(
        "UPDATE group_partitions SET owner = assigned_to"
        " WHERE group_id = ? AND owner IS NULL AND assigned_to IS NOT NULL",
        (group_id,),
    )
    connection.execute(
        "DELETE FROM group_partitions WHERE group_id = ? AND assigned_to IS NULL AND owner IS NULL",
        (group_id,),
    )


def _membership(
    connection: sqlite3.Connection, name: str, group_id: int, member_id: str
) -> Membership:
    (generation,) = connection.execute(
        "SELECT generation FROM groups WHERE id = ?", (group_id,)
    ).fetchone()
    connection.execute(
        "UPDATE group_members SET generation = ? WHERE group_id = ? AND member_id = ?",
        (generation, group_id, member_id),
    )
    names = {t.id: t.spec.name for t in streams.topics_by_id(connection).values()}
    assigned: list[TopicPartition] = []
    owned: list[TopicPartition] = []
    for topic_id, partition, assigned_to, owner in connection.execute(
        "SELECT topic_id, partition, assigned_to, owner FROM group_partitions"
        " WHERE group_id = ? AND (assigned_to = ? OR owner = ?) ORDER BY topic_id, partition",
        (group_id, member_id, member_id),
    ):
        tp = TopicPartition(names[topic_id], partition)
        if assigned_to == member_id:
            assigned.append(tp)
        if owner == member_id:
            owned.append(tp)
    revoked = tuple(tp for tp in owned if tp not in assigned)
    return Membership(name, member_id, generation, tuple(assigned), tuple(owned), revoked)


# offsets


def commit(connection: sqlite3.Connection, commit: OffsetCommit, now_ms: int) -> None:
    group = _group(connection, commit.group)
    if group is None:
        if commit.member_id is not None:
            raise MemberFenced(commit.group, commit.member_id, "the group does not exist")
        connection.execute(
            "INSERT INTO groups (name, assignor) VALUES (?, 'range')", (commit.group,)
        )
        group = _group(connection, commit.group)
        assert group is not None
    group_id = group[0]
    if _expire_members(connection, group_id, now_ms):
        _rebalance(connection, group_id)  # their partitions must go to the members left
    ids = {name: stored for name, stored in _topics_by_name(connection).items()}
    rows = []
    for (topic, partition), offset in commit.offsets.items():
        stored = ids.get(topic)
        if stored is None:
            raise TopicNotFound(topic)
        stored.check_partition(partition)
        rows.append((group_id, stored.id, partition, offset, now_ms))
    if commit.member_id is None:
        if _member_count(connection, group_id):
            raise MemberFenced(
                commit.group,
                "(none)",
                "the group has active members, and only they may commit while it does; "
                "stop them (or wait for their session timeout) before resetting offsets",
            )
    else:
        _check_owner(connection, commit, group_id, [(row[1], row[2]) for row in rows])
    connection.executemany(
        "INSERT OR REPLACE INTO group_offsets (group_id, topic_id, partition, offset,"
        " committed_at_ms) VALUES (?, ?, ?, ?, ?)",
        rows,
    )


def _topics_by_name(connection: sqlite3.Connection) -> dict[str, streams.StoredTopic]:
    return {t.spec.name: t for t in streams.topics_by_id(connection).values()}


def _check_owner(
    connection: sqlite3.Connection,
    commit: OffsetCommit,
    group_id: int,
    partitions: Sequence[tuple[int, int]],
) -> None:
    member_id = commit.member_id
    assert member_id is not None
    row = connection.execute(
        "SELECT generation FROM group_members WHERE group_id = ? AND member_id = ?",
        (group_id, member_id),
    ).fetchone()
    if row is None:
        raise MemberFenced(
            commit.group,
            member_id,
            "it is not in the group (it left, or missed its session timeout)",
        )
    if commit.generation is not None and commit.generation != row[0]:
        raise MemberFenced(
            commit.group, member_id, f"generation {commit.generation} is stale (now {row[0]})"
        )
    for topic_id, partition in partitions:
        owner = connection.execute(
            "SELECT owner FROM group_partitions"
            " WHERE group_id = ? AND topic_id = ? AND partition = ?",
            (group_id, topic_id, partition),
        ).fetchone()
        if owner is None or owner[0] != member_id:
            raise MemberFenced(
                commit.group, member_id, f"it does not own partition {partition} any more"
            )


def committed(
    connection: sqlite3.Connection, name: str, partitions: Sequence[TopicPartition] | None
) -> dict[TopicPartition, int]:
    group = _group(connection, name)
    if group is None:
        return {}
    names = {t.id: t.spec.name for t in streams.topics_by_id(connection).values()}
    stored = {
        TopicPartition(names[topic_id], partition): offset
        for topic_id, partition, offset in connection.execute(
            "SELECT topic_id, partition, offset FROM group_offsets WHERE group_id = ?",
            (group[0],),
        )
        if topic_id in names
    }
    if partitions is None:
        return stored
    return {tp: stored[tp] for tp in partitions if tp in stored}


def names(connection: sqlite3.Connection) -> list[str]:
    return [row[0] for row in connection.execute("SELECT name FROM groups ORDER BY name")]


def describe(connection: sqlite3.Connection, name: str, now_ms: int) -> GroupInfo:
    group = _group(connection, name)
    if group is None:
        raise ConfigError(f"there is no consumer group {name!r}; list them with list_groups")
    group_id, generation, assignor_name = group
    by_id = streams.topics_by_id(connection)
    # Members past their session timeout are gone, even before a write removes them.
    live = connection.execute(
        "SELECT member_id, topics, generation, heartbeat_at_ms, session_timeout_ms"
        " FROM group_members WHERE group_id = ? AND heartbeat_at_ms + session_timeout_ms >= ?"
        " ORDER BY member_id",
        (group_id, now_ms),
    ).fetchall()
    alive = {row[0] for row in live}
    owned: dict[str, list[TopicPartition]] = {}
    owners: dict[TopicPartition, str | None] = {}
    for topic_id, partition, owner in connection.execute(
        "SELECT topic_id, partition, owner FROM group_partitions WHERE group_id = ?",
        (group_id,),
    ):
        tp = TopicPartition(by_id[topic_id].spec.name, partition)
        owners[tp] = owner if owner in alive else None
        if owner in alive:
            owned.setdefault(owner, []).append(tp)
    members = tuple(
        GroupMember(
            member_id,
            tuple(json.loads(topics)),
            member_generation,
            heartbeat_at_ms / 1000,
            session_timeout_ms / 1000,
            tuple(sorted(owned.get(member_id, []))),
        )
        for member_id, topics, member_generation, heartbeat_at_ms, session_timeout_ms in live
    )
    offsets = committed(connection, name, None)
    partitions = sorted(set(offsets) | set(owners))
    lags = []
    for tp in partitions:
        stored = next(t for t in by_id.values() if t.spec.name == tp.topic)
        _, end = streams.log_range(connection, stored.id, tp.partition)
        lags.append(PartitionLag(tp.topic, tp.partition, offsets.get(tp), end, owners.get(tp)))
    return GroupInfo(name, generation, assignor_name, members, tuple(lags))


def delete(connection: sqlite3.Connection, name: str, now_ms: int) -> None:
    group = _group(connection, name)
    if group is None:
        return
    _expire_members(connection, group[0], now_ms)
    if _member_count(connection, group[0]):
        raise ConfigError(f"group {name!r} has active members; stop them before deleting the group")
    for table in ("group_offsets", "group_partitions", "group_members"):
        connection.execute(f"DELETE FROM {table} WHERE group_id = ?", (group[0],))
    connection.execute("DELETE FROM groups WHERE id = ?", (group[0],))
