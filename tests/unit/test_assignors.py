"""Consumer-group assignment: Kafka's documented examples, and properties of every assignment."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.assignors import (
    ASSIGNORS,
    Assignor,
    TopicPartition,
    assignor,
    range_assign,
    round_robin_assign,
)
from conveyor.errors import ConfigError


def tps(*names: str) -> list[TopicPartition]:
    """``tps("t0p0", "t1p2")``: the notation of Kafka's Javadoc."""
    out = []
    for name in names:
        topic, _, partition = name.rpartition("p")
        out.append(TopicPartition(topic, int(partition)))
    return out


def of(topic: str, *partitions: int) -> list[TopicPartition]:
    return [TopicPartition(topic, partition) for partition in partitions]


# -- Kafka's Javadoc examples (RangeAssignor, RoundRobinAssignor) ----------------------------


def test_range_example_from_kafkas_javadoc() -> None:
    # two consumers, two topics of 3 partitions each
    subscriptions = {"C0": ["t0", "t1"], "C1": ["t0", "t1"]}
    assert range_assign(subscriptions, {"t0": 3, "t1": 3}) == {
        "C0": tps("t0p0", "t0p1", "t1p0", "t1p1"),
        "C1": tps("t0p2", "t1p2"),
    }


def test_round_robin_example_from_kafkas_javadoc() -> None:
    subscriptions = {"C1": ["t0", "t1"], "C0": ["t1", "t0"]}
    assert round_robin_assign(subscriptions, {"t0": 3, "t1": 3}) == {
        "C0": tps("t0p0", "t0p2", "t1p1"),
        "C1": tps("t0p1", "t1p0", "t1p2"),
    }


def test_round_robin_with_different_subscriptions_from_kafkas_javadoc() -> None:
    subscriptions = {"C0": ["t0"], "C1": ["t0", "t1"], "C2": ["t0", "t1", "t2"]}
    assert round_robin_assign(subscriptions, {"t0": 1, "t1": 2, "t2": 3}) == {
        "C0": tps("t0p0"),
        "C1": tps("t1p0"),
        "C2": tps("t1p1", "t2p0", "t2p1", "t2p2"),
    }


# -- more examples ---------------------------------------------------------------------------


def test_range_gives_the_first_members_the_extra_partitions() -> None:
    subscriptions = {"b": ["orders"], "a": ["orders"], "c": ["orders"]}
    assert range_assign(subscriptions, {"orders": 8}) == {
        "a": of("orders", 0, 1, 2),
        "b": of("orders", 3, 4, 5),
        "c": of("orders", 6, 7),
    }


def test_range_splits_each_topic_among_its_own_subscribers() -> None:
    subscriptions = {"a": ["x"], "b": ["x", "y"], "c": ["y"]}
    assert range_assign(subscriptions, {"x": 3, "y": 2}) == {
        "a": of("x", 0, 1),
        "b": of("x", 2) + of("y", 0),
        "c": of("y", 1),
    }


@pytest.mark.parametrize("assign", ASSIGNORS.values())
def test_more_members_than_partitions_leaves_some_idle(assign: Assignor) -> None:
    result = assign({"a": ["t"], "b": ["t"], "c": ["t"]}, {"t": 2})
    assert result == {"a": of("t", 0), "b": of("t", 1), "c": []}


@pytest.mark.parametrize("assign", ASSIGNORS.values())
def test_topics_without_metadata_are_skipped_and_every_member_is_listed(
    assign: Assignor,
) -> None:
    result = assign(
        {"a": ["known", "unknown"], "b": [], "c": ["unknown"]}, {"known": 1, "other": 4}
    )
    assert result == {"a": of("known", 0), "b": [], "c": []}


@pytest.mark.parametrize("assign", ASSIGNORS.values())
def test_empty_inputs(assign: Assignor) -> None:
    assert assign({}, {"t": 3}) == {}
    assert assign({"a": ["t"]}, {"t": 0}) == {"a": []}


@pytest.mark.parametrize("assign", ASSIGNORS.values())
def test_a_string_subscription_is_a_config_error(assign: Assignor) -> None:
    with pytest.raises(ConfigError, match=r"a list of topic names, e\.g\. \['orders'\]"):
        assign({"a": "orders"}, {"orders": 3})


@pytest.mark.parametrize("assign", ASSIGNORS.values())
def test_a_negative_partition_count_is_a_config_error(assign: Assignor) -> None:
    with pytest.raises(ConfigError, match="-1 partitions"):
        assign({"a": ["t"]}, {"t": -1})


def test_assignors_by_kafkas_names() -> None:
    assert assignor("range") is range_assign
    assert assignor("roundrobin") is round_robin_assign
    with pytest.raises(ConfigError, match="'cooperative-sticky'; use one of 'range', 'roundrobin'"):
        assignor("cooperative-sticky")


# -- properties ------------------------------------------------------------------------------

TOPICS = ["t0", "t1", "t2", "t3"]
members = st.lists(st.text("abcdef", min_size=1, max_size=3), unique=True, max_size=8)


@st.composite
def groups(draw: st.DrawFn) -> tuple[dict[str, list[str]], dict[str, int]]:
    names = draw(members)
    subscriptions = {
        name: draw(st.lists(st.sampled_from(TOPICS), unique=True, max_size=4)) for name in names
    }
    known = draw(st.lists(st.sampled_from(TOPICS), unique=True))
    partitions = {topic: draw(st.integers(min_value=0, max_value=20)) for topic in known}
    return subscriptions, partitions


def check_complete_and_exclusive(
    subscriptions: Mapping[str, Collection[str]],
    partitions: Mapping[str, int],
    result: dict[str, list[TopicPartition]],
) -> None:
    assert set(result) == set(subscriptions)
    owners: dict[TopicPartition, list[str]] = {}
    for member, assigned in result.items():
        assert assigned == sorted(assigned)
        for tp in assigned:
            assert tp.topic in subscriptions[member]  # only topics it subscribes to
            owners.setdefault(tp, []).append(member)
    subscribed = {topic for topics in subscriptions.values() for topic in topics}
    expected = {
        TopicPartition(topic, p)
        for topic in subscribed & partitions.keys()
        for p in range(partitions[topic])
    }
    assert set(owners) == expected  # every partition of every subscribed topic...
    assert all(len(who) == 1 for who in owners.values())  # ...to exactly one member


@pytest.mark.parametrize("assign", ASSIGNORS.values())
@given(group=groups())
def test_every_partition_goes_to_exactly_one_subscriber(
    assign: Assignor, group: tuple[dict[str, list[str]], dict[str, int]]
) -> None:
    subscriptions, partitions = group
    check_complete_and_exclusive(subscriptions, partitions, assign(subscriptions, partitions))


@pytest.mark.parametrize("assign", ASSIGNORS.values())
@given(group=groups(), data=st.data())
def test_the_result_does_not_depend_on_input_order(
    assign: Assignor,
    group: tuple[dict[str, list[str]], dict[str, int]],
    data: st.DataObject,
) -> None:
    subscriptions, partitions = group
    shuffled = {
        member: data.draw(st.permutations(subscriptions[member]))
        for member in data.draw(st.permutations(list(subscriptions)))
    }
    reordered = dict(data.draw(st.permutations(list(partitions.items()))))
    expected = assign(subscriptions, partitions)
    assert assign(subscriptions, partitions) == expected
    assert assign(shuffled, reordered) == expected


@given(group=groups())
def test_range_balances_each_topic_within_one(
    group: tuple[dict[str, list[str]], dict[str, int]],
) -> None:
    subscriptions, partitions = group
    result = range_assign(subscriptions, partitions)
    for topic in partitions:
        counts = [
            sum(tp.topic == topic for tp in result[member])
            for member in sorted(subscriptions)
            if topic in subscriptions[member]
        ]
        if counts:
            assert max(counts) - min(counts) <= 1
            assert counts == sorted(counts, reverse=True)  # the extra ones go to the first


@given(
    names=members.filter(bool),
    topics=st.lists(st.sampled_from(TOPICS), unique=True),
    counts=st.lists(st.integers(min_value=0, max_value=20), min_size=4, max_size=4),
)
def test_round_robin_with_identical_subscriptions_balances_within_one(
    names: list[str], topics: list[str], counts: list[int]
) -> None:
    partitions = dict(zip(TOPICS, counts, strict=True))
    result = round_robin_assign(dict.fromkeys(names, topics), partitions)
    totals = Counter({member: len(assigned) for member, assigned in result.items()})
    assert max(totals.values()) - min(totals.values()) <= 1
    assert sum(totals.values()) == sum(partitions[topic] for topic in topics)
