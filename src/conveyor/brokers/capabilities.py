"""What each backend guarantees, known without importing it.

A backend class takes its ``capabilities`` from ``DECLARED`` here, so the registry can name
the backends that have a capability (in a ``NotSupported`` error) without importing one
backend's client library to describe another.
"""

from __future__ import annotations

from enum import StrEnum


class Capability(StrEnum):
    """One guarantee a backend gives, each with a conformance test of what it names."""

    QUEUES = "queues"
    EXCHANGES = "exchanges"
    PRIORITIES = "priorities"
    DELAYS = "delays"
    TTL = "ttl"
    MAX_LENGTH = "max-length"
    DEAD_LETTER = "dead-letter"
    DELIVERY_LIMIT = "delivery-limit"
    """A message delivered more often than its queue's ``delivery_limit`` is dead-lettered."""
    LEASES = "leases"
    """A delivery's lease lapses after ``lease_timeout`` and the message comes back, although
    the consumer's connection is still open."""
    LEASE_EXTENSION = "lease-extension"
    FENCED_ACKS = "fenced-acks"
    """An ack after the lease lapsed raises ``LeaseLost``: a stalled consumer can never
    settle the copy that was redelivered to someone else. Without it, a late ack may."""
    UNCOUNTED_RELEASE = "uncounted-release"
    """``release`` gives a delivery back without counting it as an attempt."""
    EXACT_STATS = "exact-stats"
    """``queue_stats`` knows every figure at once (delayed, unacked, bytes, the lifetime
    counters) and ``exchange_stats`` the unroutable count. Without it only ``ready`` is
    exact; the rest may be sampled a few seconds late, or None where unknown."""
    ROUTE_COUNTS = "route-counts"
    """``publish`` says how many queues each message reached. Without it: 1 if any, else 0."""
    ATOMIC_BATCH_PUBLISH = "atomic-batch-publish"
    """``publish_batch`` stores all messages or none; without it, a failure part-way through
    may leave the first messages published."""
    BROWSE = "browse"
    """Read waiting messages without leasing or changing them, and move them between queues."""
    ATOMIC_SETTLE = "atomic-settle"
    """``settle`` changes a job's message and its record in the broker's own result store in
    one transaction."""
    RESULTS = "results"
    """The broker keeps a ResultStore of its own (``Broker.results()``)."""
    STREAMS = "streams"
    REPLAY = "replay"
    """Records stay after they are read; a consumer may seek back and read them again."""
    RETENTION = "retention"
    COMPACTION = "compaction"
    IDEMPOTENT_PRODUCE = "idempotent-produce"
    TRANSACTIONAL_PRODUCE = "transactional-produce"
    """``produce(..., commit=...)`` appends and commits a group's offsets atomically."""
    CONSUMER_GROUPS = "consumer-groups"
    """Members of a group share a topic's partitions through ``open_group``, commit their
    progress, and the group can be listed, described (lag), reset and deleted."""
    GROUP_COORDINATION = "group-coordination"
    """The broker answers the group calls (``join_group``, ``heartbeat_group``,
    ``leave_group``) from its own store; Kafka's brokers run their own protocol instead."""


_EMBEDDED = frozenset(Capability)

_RABBITMQ = frozenset(
    {
        Capability.QUEUES,
        Capability.EXCHANGES,
        Capability.PRIORITIES,
        Capability.DELAYS,
        Capability.TTL,
        Capability.MAX_LENGTH,
        Capability.DEAD_LETTER,
        Capability.DELIVERY_LIMIT,
    }
)

_KAFKA = frozenset(
    {
        Capability.STREAMS,
        Capability.REPLAY,
        Capability.CONSUMER_GROUPS,
        Capability.TRANSACTIONAL_PRODUCE,
    }
)
"""Idempotent produce is not declared: Kafka's idempotent producer keeps its own retries
from duplicating records, but a call sent again after an unknown outcome is a new one to
the brokers, which is what IDEMPOTENT_PRODUCE promises to absorb."""

_REDIS = frozenset(
    {
        Capability.QUEUES,
        Capability.EXCHANGES,
        Capability.PRIORITIES,
        Capability.DELAYS,
        Capability.DEAD_LETTER,
        Capability.DELIVERY_LIMIT,
        Capability.LEASES,
        Capability.LEASE_EXTENSION,
        Capability.FENCED_ACKS,
        Capability.UNCOUNTED_RELEASE,
        Capability.EXACT_STATS,
        Capability.ROUTE_COUNTS,
        Capability.ATOMIC_BATCH_PUBLISH,
        Capability.BROWSE,
        Capability.RESULTS,
        Capability.STREAMS,
        Capability.REPLAY,
        Capability.RETENTION,
        Capability.IDEMPOTENT_PRODUCE,
        Capability.TRANSACTIONAL_PRODUCE,
        Capability.CONSUMER_GROUPS,
        Capability.GROUP_COORDINATION,
    }
)
"""TTL and max-length are not declared: Redis trims a stream only from its oldest entry
(``XADD MAXLEN``, exact or ``~``), delivered or not, which is neither RabbitMQ's
per-message expiry at the head nor its limit on the messages a queue holds. Compaction is
not declared: Redis keeps no latest entry per key, so it could only be a scan."""

DECLARED: dict[str, frozenset[Capability]] = {
    "sqlite": _EMBEDDED,
    "memory": _EMBEDDED,
    "amqp": _RABBITMQ,
    "amqps": _RABBITMQ,
    "kafka": _KAFKA,
    "redis": _REDIS,
    "rediss": _REDIS,
    "unix": _REDIS,
}
"""URL scheme -> the capabilities its backend declares."""
