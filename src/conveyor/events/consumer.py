"""Reading topics: the consumer a broker opens, by group membership or by assignment.

The consumer itself is the broker's (``Broker.open_group`` / ``open_assigned``, see
brokers/group_consumer.py), so an engine with its own group protocol brings its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from conveyor.brokers.base import Broker
from conveyor.brokers.group_consumer import GroupConsumer, OffsetReset, Revoked
from conveyor.errors import ConfigError

StreamConsumer = GroupConsumer
"""What ``App.aconsumer`` and ``open_consumer`` return."""


def open_consumer(
    broker: Broker,
    topics: Sequence[str] = (),
    *,
    assign: Iterable[tuple[str, int]] = (),
    group: str | None = None,
    **options: Any,
) -> GroupConsumer:
    """Subscribe to ``topics`` as a member of ``group``, or read ``assign``ed partitions.

    Options: auto_offset_reset ("earliest", "latest" or "none"), enable_auto_commit,
    auto_commit_interval, session_timeout, heartbeat_interval, max_poll_records,
    assignor ("range" or "roundrobin") and on_revoke (see CoordinatedConsumer).
    """
    partitions = list(assign)
    if bool(topics) == bool(partitions):
        raise ConfigError("give either topics to subscribe to, or partitions to assign")
    if topics:
        if group is None:
            raise ConfigError("subscribing to topics needs a group; or assign partitions")
        return broker.open_group(topics, group, **options)
    return broker.open_assigned(partitions, group=group, **options)


__all__ = ["OffsetReset", "Revoked", "StreamConsumer", "open_consumer"]
