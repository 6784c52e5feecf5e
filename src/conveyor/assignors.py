"""Which member of a consumer group reads which partitions: Kafka's assignors. Pure: no I/O.

The group's leader runs one of these over every member's subscription and the partition
counts of the subscribed topics. The results match Kafka's ``RangeAssignor`` and
``RoundRobinAssignor`` for the same input, so that a group's behaviour (who reads what after
a rebalance) is the one people know from Kafka. Both are deterministic: every member
computing the assignment from the same input gets the same answer.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import NamedTuple

from conveyor.errors import ConfigError


class TopicPartition(NamedTuple):
    topic: str
    partition: int


Assignment = dict[str, list[TopicPartition]]
Assignor = Callable[[Mapping[str, Collection[str]], Mapping[str, int]], Assignment]


def _topic_sets(subscriptions: Mapping[str, Collection[str]]) -> dict[str, frozenset[str]]:
    topic_sets: dict[str, frozenset[str]] = {}
    for member, topics in subscriptions.items():
        # a bare string is a Collection of one-letter "topics": almost certainly a mistake
        if isinstance(topics, str):
            raise ConfigError(
                f"member {member!r} subscribes to {topics!r}, a string; give a list of topic "
                f"names, e.g. [{topics!r}]"
            )
        topic_sets[member] = frozenset(topics)
    return topic_sets


def _partition_count(partitions: Mapping[str, int], topic: str) -> int:
    count = partitions[topic]
    if count < 0:
        raise ConfigError(f"topic {topic!r} has {count} partitions; a partition count is 0 or more")
    return count


def range_assign(
    subscriptions: Mapping[str, Collection[str]], partitions: Mapping[str, int]
) -> Assignment:
    """Kafka's range assignment: each member gets a contiguous run of each topic's partitions.

    Per topic, the members subscribed to it are sorted by member id; with ``n`` partitions
    and ``m`` members each gets ``n // m`` and the first ``n % m`` one more. Members that
    share topics get the same partition numbers of each, which is what co-partitioned joins
    need (and why the first members carry more load when counts do not divide evenly).

    Args:
        subscriptions: member id -> the topics it subscribes to.
        partitions: topic -> its partition count; topics missing here are skipped (no
            metadata yet), as Kafka does.

    Returns:
        Every member -> its partitions sorted by (topic, partition), possibly empty.

    Raises:
        ConfigError: a subscription is a bare string, or a partition count is negative.
    """
    topic_sets = _topic_sets(subscriptions)
    assignment: Assignment = {member: [] for member in sorted(topic_sets)}
    members_of: dict[str, list[str]] = {}
    for member in assignment:  # sorted, so each topic's member list comes out sorted
        for topic in topic_sets[member]:
            members_of.setdefault(topic, []).append(member)
    for topic in sorted(members_of.keys() & partitions.keys()):
        count = _partition_count(partitions, topic)
        members = members_of[topic]
        each, extra = divmod(count, len(members))
        for index, member in enumerate(members):
            start = each * index + min(index, extra)
            length = each + (1 if index < extra else 0)
            assignment[member].extend(
                TopicPartition(topic, partition) for partition in range(start, start + length)
            )
    return assignment


def round_robin_assign(
    subscriptions: Mapping[str, Collection[str]], partitions: Mapping[str, int]
) -> Assignment:
    """Kafka's round-robin assignment: partitions dealt out to members in turn.

    All partitions of all subscribed topics, sorted by (topic, partition), go one by one to
    the members sorted by id, cycling; a member not subscribed to a partition's topic is
    passed over. With identical subscriptions, members' counts differ by at most one; with
    different subscriptions the result can be uneven (Kafka's own documented behaviour).

    Args:
        subscriptions: member id -> the topics it subscribes to.
        partitions: topic -> its partition count; topics missing here are skipped.

    Returns:
        Every member -> its partitions sorted by (topic, partition), possibly empty.

    Raises:
        ConfigError: a subscription is a bare string, or a partition count is negative.
    """
    topic_sets = _topic_sets(subscriptions)
    members = sorted(topic_sets)
    assignment: Assignment = {member: [] for member in members}
    subscribed = frozenset().union(*topic_sets.values())
    turn = 0  # carries on across topics, as Kafka's circular iterator does
    for topic in sorted(subscribed & partitions.keys()):
        for partition in range(_partition_count(partitions, topic)):
            # ends: some member subscribes to the topic, or it would not be in `subscribed`
            while topic not in topic_sets[members[turn]]:
                turn = (turn + 1) % len(members)
            assignment[members[turn]].append(TopicPartition(topic, partition))
            turn = (turn + 1) % len(members)
    return assignment


ASSIGNORS: dict[str, Assignor] = {"range": range_assign, "roundrobin": round_robin_assign}


def assignor(name: str) -> Assignor:
    """The assignor a group's ``partition.assignment.strategy`` names (Kafka's names).

    Raises:
        ConfigError: no assignor has that name; the message lists those that do.
    """
    try:
        return ASSIGNORS[name]
    except KeyError:
        valid = ", ".join(repr(known) for known in sorted(ASSIGNORS))
        raise ConfigError(f"no partition assignor named {name!r}; use one of {valid}") from None
