"""Consumer-group coordination as a state machine, for engines whose store is the coordinator.

The store (SQLite's tables, a Redis key) loads a group's ``GroupState``, runs one step
here inside its own transaction, and writes the state back; every engine that coordinates
groups in its store runs these same rules. No I/O: ``now_ms`` and the subscribed topics'
partition counts come from the caller.

- Every join, heartbeat, commit and leave first removes members silent past their session
  timeout. A change of membership, or of a subscribed topic's partition count, starts a new
  generation and recomputes the assignment with the group's assignor.
- A partition changes hands in two steps: ``assigned_to`` is who the generation gives it
  to, ``owner`` who may read it now. The old owner keeps it until it has committed what it
  read and releases it on its next heartbeat (or is removed for silence); only then does
  the new member own it. No partition is ever read by two members at once.
- A commit is accepted from a member still in the group, at the generation it last heard
  of, for partitions it owns; an admin commit (no member) only while the group is empty.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from conveyor.assignors import TopicPartition, assignor
from conveyor.brokers.stream_types import (
    GroupInfo,
    GroupMember,
    Membership,
    OffsetCommit,
    PartitionLag,
)
from conveyor.errors import ConfigError, MemberFenced, PartitionNotFound, TopicNotFound

NOT_IN_GROUP = "it is not in the group (it left, or missed its session timeout)"

PartitionCounts = Mapping[str, int]
"""Topic name -> its partition count, for every topic that exists."""


@dataclass(frozen=True, slots=True)
class MemberState:
    topics: tuple[str, ...]
    generation: int
    session_timeout_ms: int
    heartbeat_at_ms: int

    def alive(self, now_ms: int) -> bool:
        return self.heartbeat_at_ms + self.session_timeout_ms >= now_ms


@dataclass(frozen=True, slots=True)
class PartitionState:
    assigned_to: str | None
    owner: str | None


@dataclass(slots=True)
class GroupState:
    name: str
    assignor: str = "range"
    generation: int = 0
    members: dict[str, MemberState] = field(default_factory=dict)
    partitions: dict[TopicPartition, PartitionState] = field(default_factory=dict)

    def copy(self) -> GroupState:
        return GroupState(
            self.name, self.assignor, self.generation, dict(self.members), dict(self.partitions)
        )

    # the steps a store runs

    def join(
        self,
        topics: Sequence[str],
        member_id: str | None,
        session_timeout_ms: int,
        assignor_name: str,
        now_ms: int,
        counts: PartitionCounts,
    ) -> Membership:
        for topic in topics:
            if topic not in counts:
                raise TopicNotFound(topic)
        if self.assignor != assignor_name:
            if self.members:
                raise ConfigError(
                    f"group {self.name!r} uses the {self.assignor!r} assignor; its members "
                    f"must all use it, not {assignor_name!r}"
                )
            self.assignor = assignor_name
        member_id = member_id or f"member-{secrets.token_hex(6)}"
        self.members[member_id] = MemberState(
            tuple(sorted(set(topics))), 0, session_timeout_ms, now_ms
        )
        self._expire(now_ms)
        self._rebalance(counts)
        return self._membership(member_id)

    def heartbeat(
        self,
        member_id: str,
        release: Iterable[TopicPartition],
        now_ms: int,
        counts: PartitionCounts,
    ) -> Membership:
        expired = self._expire(now_ms)
        self._check_member(member_id)
        if expired or self._subscriptions_changed(counts):
            self._rebalance(counts)
        self.members[member_id] = replace(self.members[member_id], heartbeat_at_ms=now_ms)
        for tp in release:
            held = self.partitions.get(TopicPartition(*tp))
            if held is not None and held.owner == member_id:
                self.partitions[TopicPartition(*tp)] = replace(held, owner=held.assigned_to)
        self._hand_over()
        return self._membership(member_id)

    def leave(self, member_id: str, counts: PartitionCounts) -> None:
        self.members.pop(member_id, None)
        self._forget_owners([member_id])
        self._rebalance(counts)

    def check_commit(self, commit: OffsetCommit, now_ms: int, counts: PartitionCounts) -> None:
        """Refuse a commit the group must not take (MemberFenced, TopicNotFound, ConfigError)."""
        if self._expire(now_ms):
            self._rebalance(counts)  # their partitions must go to the members left
        for topic, partition in commit.offsets:
            check_partition(counts, topic, partition)
        if commit.member_id is None:
            if self.members:
                raise MemberFenced(
                    commit.group,
                    "(none)",
                    "the group has active members, and only they may commit while it does; "
                    "stop them (or wait for their session timeout) before resetting offsets",
                )
            return
        member = self.members.get(commit.member_id)
        if member is None:
            raise MemberFenced(commit.group, commit.member_id, NOT_IN_GROUP)
        if commit.generation is not None and commit.generation != member.generation:
            raise MemberFenced(
                commit.group,
                commit.member_id,
                f"generation {commit.generation} is stale (now {member.generation})",
            )
        for tp in commit.offsets:
            held = self.partitions.get(TopicPartition(*tp))
            if held is None or held.owner != commit.member_id:
                raise MemberFenced(
                    commit.group, commit.member_id, f"it does not own partition {tp[1]} any more"
                )

    def check_deletable(self, now_ms: int) -> None:
        self._expire(now_ms)
        if self.members:
            raise ConfigError(
                f"group {self.name!r} has active members; stop them before deleting the group"
            )

    def describe(
        self,
        now_ms: int,
        offsets: Mapping[TopicPartition, int],
        end_offset: Callable[[TopicPartition], int],
    ) -> GroupInfo:
        """The group as seen at ``now_ms``: members past their session timeout are gone,
        even before a write removes them."""
        live = {m: state for m, state in sorted(self.members.items()) if state.alive(now_ms)}
        owned: dict[str, list[TopicPartition]] = {}
        owners: dict[TopicPartition, str | None] = {}
        for tp, held in self.partitions.items():
            owner = held.owner if held.owner in live else None
            owners[tp] = owner
            if owner is not None:
                owned.setdefault(owner, []).append(tp)
        members = tuple(
            GroupMember(
                member_id,
                state.topics,
                state.generation,
                state.heartbeat_at_ms / 1000,
                state.session_timeout_ms / 1000,
                tuple(sorted(owned.get(member_id, []))),
            )
            for member_id, state in live.items()
        )
        lags = tuple(
            PartitionLag(tp.topic, tp.partition, offsets.get(tp), end_offset(tp), owners.get(tp))
            for tp in sorted(set(offsets) | set(owners))
        )
        return GroupInfo(self.name, self.generation, self.assignor, members, lags)

    def forget_topics(self, counts: PartitionCounts) -> None:
        """Drop what the group held of topics (or partitions) that no longer exist."""
        self.partitions = {
            tp: held
            for tp, held in self.partitions.items()
            if tp.partition < counts.get(tp.topic, 0)
        }

    # the rules

    def _check_member(self, member_id: str) -> None:
        if member_id not in self.members:
            raise MemberFenced(self.name, member_id, NOT_IN_GROUP)

    def _expire(self, now_ms: int) -> list[str]:
        expired = [m for m, state in self.members.items() if not state.alive(now_ms)]
        for member_id in expired:
            del self.members[member_id]
        self._forget_owners(expired)
        return expired

    def _forget_owners(self, members: Sequence[str]) -> None:
        for tp, held in list(self.partitions.items()):
            if held.owner in members:
                self.partitions[tp] = replace(held, owner=None)

    def _subscriptions_changed(self, counts: PartitionCounts) -> bool:
        """Did a subscribed topic gain partitions (or vanish) since the last assignment?"""
        topics = {t for state in self.members.values() for t in state.topics}
        wanted = sum(counts[t] for t in topics if t in counts)
        assigned = sum(1 for held in self.partitions.values() if held.assigned_to is not None)
        return wanted != assigned

    def _rebalance(self, counts: PartitionCounts) -> None:
        """A new generation: assign every subscribed partition to one member."""
        self.generation += 1
        subscriptions = {m: list(state.topics) for m, state in self.members.items()}
        wanted = {t: counts[t] for ts in subscriptions.values() for t in ts if t in counts}
        plan = assignor(self.assignor)(subscriptions, wanted) if subscriptions else {}
        assigned_to = {TopicPartition(*tp): member for member, tps in plan.items() for tp in tps}
        for tp in set(self.partitions) | set(assigned_to):
            held = self.partitions.get(tp)
            self.partitions[tp] = PartitionState(
                assigned_to.get(tp), None if held is None else held.owner
            )
        self._hand_over()

    def _hand_over(self) -> None:
        """Partitions nobody owns go to the member they are assigned to."""
        for tp, held in list(self.partitions.items()):
            if held.owner is None:
                if held.assigned_to is None:
                    del self.partitions[tp]
                else:
                    self.partitions[tp] = replace(held, owner=held.assigned_to)

    def _membership(self, member_id: str) -> Membership:
        self.members[member_id] = replace(self.members[member_id], generation=self.generation)
        ordered = sorted(self.partitions.items())
        assigned = tuple(tp for tp, held in ordered if held.assigned_to == member_id)
        owned = tuple(tp for tp, held in ordered if held.owner == member_id)
        revoked = tuple(tp for tp in owned if tp not in assigned)
        return Membership(self.name, member_id, self.generation, assigned, owned, revoked)


def check_partition(counts: PartitionCounts, topic: str, partition: int) -> None:
    if topic not in counts:
        raise TopicNotFound(topic)
    if not 0 <= partition < counts[topic]:
        raise PartitionNotFound(topic, partition, counts[topic])
