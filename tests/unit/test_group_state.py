"""The group state machine every self-coordinating engine runs, without a store."""

from __future__ import annotations

import pytest

from conveyor.assignors import TopicPartition
from conveyor.brokers.group_state import GroupState
from conveyor.brokers.stream_types import OffsetCommit
from conveyor.errors import ConfigError, MemberFenced, PartitionNotFound, TopicNotFound

COUNTS = {"orders": 4}
TIMEOUT = 10_000


def orders(*partitions: int) -> tuple[TopicPartition, ...]:
    return tuple(TopicPartition("orders", p) for p in partitions)


def test_a_lone_member_is_given_and_owns_every_partition() -> None:
    group = GroupState("g")
    membership = group.join(["orders"], "a", TIMEOUT, "range", 0, COUNTS)
    assert membership.generation == 1
    assert membership.assigned == membership.owned == orders(0, 1, 2, 3)
    assert membership.revoked == ()


def test_a_new_member_owns_moved_partitions_only_after_the_old_owner_releases_them() -> None:
    group = GroupState("g")
    group.join(["orders"], "a", TIMEOUT, "range", 0, COUNTS)
    joined = group.join(["orders"], "b", TIMEOUT, "range", 1, COUNTS)
    assert joined.assigned == orders(2, 3)
    assert joined.owned == ()
    old = group.heartbeat("a", [], 2, COUNTS)
    assert old.assigned == orders(0, 1)
    assert old.revoked == orders(2, 3)
    group.heartbeat("a", (*old.revoked, TopicPartition("orders", 9)), 3, COUNTS)
    assert group.heartbeat("b", [], 4, COUNTS).owned == orders(2, 3)


def test_a_silent_member_is_removed_and_its_partitions_go_to_the_others() -> None:
    group = GroupState("g")
    group.join(["orders"], "a", TIMEOUT, "range", 0, COUNTS)
    group.join(["orders"], "b", TIMEOUT, "range", 5_000, COUNTS)
    membership = group.heartbeat("b", [], TIMEOUT + 1, COUNTS)
    assert membership.owned == orders(0, 1, 2, 3)
    with pytest.raises(MemberFenced):
        group.heartbeat("a", [], TIMEOUT + 2, COUNTS)


def test_members_must_share_the_groups_assignor_while_it_has_members() -> None:
    group = GroupState("g")
    group.join(["orders"], "a", TIMEOUT, "range", 0, COUNTS)
    with pytest.raises(ConfigError, match="'range' assignor"):
        group.join(["orders"], "b", TIMEOUT, "roundrobin", 0, COUNTS)
    group.leave("a", COUNTS)
    assert group.join(["orders"], "b", TIMEOUT, "roundrobin", 0, COUNTS).owned
    assert group.assignor == "roundrobin"


def test_joining_an_unknown_topic_changes_nothing() -> None:
    group = GroupState("g")
    with pytest.raises(TopicNotFound):
        group.join(["nope"], "a", TIMEOUT, "range", 0, COUNTS)
    assert group.members == {}
    assert group.generation == 0


def test_added_partitions_start_a_new_generation_on_the_next_heartbeat() -> None:
    group = GroupState("g")
    group.join(["orders"], "a", TIMEOUT, "range", 0, COUNTS)
    membership = group.heartbeat("a", [], 1, {"orders": 6})
    assert membership.generation == 2
    assert membership.owned == orders(0, 1, 2, 3, 4, 5)


def test_leaving_hands_partitions_over_at_once() -> None:
    group = GroupState("g")
    group.join(["orders"], "a", TIMEOUT, "range", 0, COUNTS)
    group.join(["orders"], "b", TIMEOUT, "range", 0, COUNTS)
    group.leave("a", COUNTS)
    assert group.heartbeat("b", [], 1, COUNTS).owned == orders(0, 1, 2, 3)


def commit(member: str | None, generation: int | None, *partitions: int) -> OffsetCommit:
    return OffsetCommit("g", dict.fromkeys(orders(*partitions), 5), member, generation)


def test_a_commit_is_taken_only_from_the_owner_at_its_generation() -> None:
    group = GroupState("g")
    group.join(["orders"], "a", TIMEOUT, "range", 0, COUNTS)
    group.check_commit(commit("a", 1, 0, 1), 1, COUNTS)
    with pytest.raises(MemberFenced, match="not in the group"):
        group.check_commit(commit("x", 1, 0), 1, COUNTS)
    group.join(["orders"], "b", TIMEOUT, "range", 1, COUNTS)
    group.heartbeat("a", [], 2, COUNTS)  # "a" hears of generation 2
    with pytest.raises(MemberFenced, match="stale"):
        group.check_commit(commit("a", 1, 0), 2, COUNTS)
    with pytest.raises(MemberFenced, match="does not own partition 3"):
        group.check_commit(commit("b", 2, 3), 2, COUNTS)


def test_an_admin_commit_is_refused_while_the_group_has_members() -> None:
    group = GroupState("g")
    group.check_commit(commit(None, None, 0), 0, COUNTS)
    group.join(["orders"], "a", TIMEOUT, "range", 0, COUNTS)
    with pytest.raises(MemberFenced, match="active members"):
        group.check_commit(commit(None, None, 0), 1, COUNTS)
    group.check_commit(commit(None, None, 0), TIMEOUT + 1, COUNTS)  # "a" fell silent
    assert group.members == {}


def test_a_commit_to_a_partition_that_does_not_exist_is_refused() -> None:
    group = GroupState("g")
    with pytest.raises(PartitionNotFound):
        group.check_commit(commit(None, None, 9), 0, COUNTS)
    with pytest.raises(TopicNotFound):
        group.check_commit(OffsetCommit("g", {TopicPartition("nope", 0): 1}), 0, COUNTS)


def test_describe_leaves_out_silent_members_and_reports_lag() -> None:
    group = GroupState("g")
    group.join(["orders"], "a", TIMEOUT, "range", 0, COUNTS)
    group.join(["orders"], "b", 100_000, "range", 0, COUNTS)
    info = group.describe(TIMEOUT + 1, {TopicPartition("orders", 0): 3}, lambda tp: 10)
    assert [m.member_id for m in info.members] == ["b"]
    assert info.members[0].owned == ()  # "a" never released them
    assert {p.owner for p in info.partitions} == {None}
    assert info.partitions[0].lag == 7
    assert group.describe(1, {}, lambda tp: 0).members[0].owned == orders(0, 1, 2, 3)
    assert info.lag == 7 + 3 * 10
    assert info.state == "PreparingRebalance"


def test_a_deleted_topic_is_forgotten_and_a_group_with_members_cannot_be_deleted() -> None:
    group = GroupState("g")
    group.join(["orders"], "a", TIMEOUT, "range", 0, COUNTS)
    before = group.copy()
    group.forget_topics({})
    assert group.partitions == {}
    assert before.partitions
    with pytest.raises(ConfigError, match="active members"):
        group.check_deletable(1)
    group.check_deletable(TIMEOUT + 1)
