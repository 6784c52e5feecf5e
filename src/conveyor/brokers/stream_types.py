"""Values of the streams half of the Broker seam: topics, records, offsets and groups.

Kafka's model, with Kafka's names where a user would look for them (partition, offset,
generation, log start and end offsets, lag).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from conveyor.assignors import ASSIGNORS, TopicPartition
from conveyor.brokers.types import Seconds, _count, as_float, seconds
from conveyor.codecs import loads
from conveyor.errors import ConfigError, MessageTooLarge, PartitionNotFound
from conveyor.names import check_name

__all__ = [
    "CleanupPolicy",
    "GroupInfo",
    "GroupMember",
    "Membership",
    "OffsetCommit",
    "PartitionInfo",
    "ProducerBatch",
    "ProducerRecord",
    "Record",
    "RecordMetadata",
    "RetentionReport",
    "TopicConfig",
    "TopicInfo",
    "TopicPartition",
    "TopicSpec",
]

MAX_REPLICATION = 32767  # Kafka's: a 16-bit count
MAX_FETCH = 100_000
MAX_PARTITIONS = 10_000
DAY = 86_400.0


class CleanupPolicy(StrEnum):
    """What happens to old records (Kafka's ``cleanup.policy``)."""

    DELETE = "delete"  # removed past the retention time or size
    COMPACT = "compact"  # only the latest record per key is kept
    COMPACT_DELETE = "compact,delete"  # both


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """How long records stay and how big they may be.

    Args:
        retention: seconds a record is kept (``None``: forever); Kafka's retention.ms.
        retention_bytes: bytes kept per partition, oldest removed first (``None``: no limit).
        cleanup_policy: delete, compact, or both.
        max_message_bytes: largest record (key, value and headers) accepted.
        delete_retention: seconds a tombstone (a record with value ``None``) is kept on a
            compacted topic, so that consumers see the delete before it goes.
        min_compaction_lag: seconds a record is safe from compaction after it is written.
    """

    retention: Seconds | None = 7 * DAY
    retention_bytes: int | None = None
    cleanup_policy: CleanupPolicy = CleanupPolicy.DELETE
    max_message_bytes: int = 1024 * 1024
    delete_retention: Seconds = DAY
    min_compaction_lag: Seconds = 0.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "retention", seconds(self.retention, "retention", positive=True))
        set_(self, "retention_bytes", _count(self.retention_bytes, "retention_bytes"))
        try:
            set_(self, "cleanup_policy", CleanupPolicy(self.cleanup_policy))
        except ValueError:
            valid = ", ".join(repr(p.value) for p in CleanupPolicy)
            raise ConfigError(
                f"cleanup_policy must be one of {valid}, not {self.cleanup_policy!r}"
            ) from None
        _count(self.max_message_bytes, "max_message_bytes")
        set_(self, "delete_retention", seconds(self.delete_retention, "delete_retention"))
        set_(self, "min_compaction_lag", seconds(self.min_compaction_lag, "min_compaction_lag"))

    @property
    def compacted(self) -> bool:
        return self.cleanup_policy is not CleanupPolicy.DELETE

    @property
    def deletes(self) -> bool:
        return self.cleanup_policy is not CleanupPolicy.COMPACT

    def to_json(self) -> dict[str, object]:
        return {
            "retention": as_float(self.retention),
            "retention_bytes": self.retention_bytes,
            "cleanup_policy": self.cleanup_policy.value,
            "max_message_bytes": self.max_message_bytes,
            "delete_retention": as_float(self.delete_retention),
            "min_compaction_lag": as_float(self.min_compaction_lag),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> TopicConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(
                f"unknown topic option(s) {', '.join(sorted(unknown))}; valid options: "
                f"{', '.join(cls.__dataclass_fields__)}"
            )
        return cls(**data)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic: its name, partition count and config.

    ``replication_factor`` is how many copies of each partition a cluster keeps; None
    asks for the cluster's default on create, and is what a backend that does not report
    it answers (the embedded engine keeps one copy). Two specs that differ only in it are
    equal: a topic is the same topic whatever the cluster made of the request.
    """

    name: str
    partitions: int = 1
    config: TopicConfig = field(default_factory=TopicConfig)
    replication_factor: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_name("topic", self.name)
        _count(self.partitions, "partitions", upper=MAX_PARTITIONS)
        if self.replication_factor is not None:
            _count(self.replication_factor, "replication_factor", upper=MAX_REPLICATION)

    def check_partition(self, partition: int) -> None:
        if not 0 <= partition < self.partitions:
            raise PartitionNotFound(self.name, partition, self.partitions)

    def check_records(self, records: Sequence[ProducerRecord]) -> list[int]:
        """Refuse bad sizes, keys and partitions before anything is written; the sizes."""
        limit, compacted = self.config.max_message_bytes, self.config.compacted
        sizes = []
        for record in records:
            size = record.size
            sizes.append(size)
            if size > limit:
                raise MessageTooLarge(size, limit)
            if compacted and record.key is None:
                raise ConfigError(
                    f"topic {self.name!r} is compacted, so every record needs a key; "
                    "give this record one"
                )
            if record.partition is not None:
                self.check_partition(record.partition)
        return sizes


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """One partition's log: offsets ``start`` (log start) to ``end`` (next offset written).

    ``records`` can be smaller than ``end - start`` on a compacted topic.
    """

    partition: int
    start: int
    end: int
    records: int
    bytes: int


@dataclass(frozen=True, slots=True)
class TopicInfo:
    spec: TopicSpec
    partitions: tuple[PartitionInfo, ...]

    @property
    def records(self) -> int:
        return sum(p.records for p in self.partitions)


@dataclass(frozen=True, slots=True)
class ProducerRecord:
    """A record to append. ``value=None`` is a tombstone (a delete, on compacted topics).

    ``partition`` chooses the partition; otherwise a key picks it by Kafka's murmur2 hash,
    and records without a key are spread. ``timestamp`` defaults to the append time.
    """

    value: bytes | None
    key: bytes | None = None
    headers: Mapping[str, str] | None = None
    timestamp: float | None = None
    partition: int | None = None

    @property
    def size(self) -> int:
        headers = self.headers
        header_bytes = sum(len(k) + len(v) for k, v in headers.items()) if headers else 0
        return len(self.value or b"") + len(self.key or b"") + header_bytes


class Record(NamedTuple):
    """A stored record, as a consumer reads it."""

    topic: str
    partition: int
    offset: int
    timestamp: float
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, str]

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    def json(self) -> Any:
        """The value decoded as JSON, as producers encode dicts and lists (DecodeError if
        it is not JSON; None for a tombstone)."""
        return None if self.value is None else loads(self.value)


class RecordMetadata(NamedTuple):
    """Where an appended record landed."""

    topic: str
    partition: int
    offset: int
    timestamp: float


@dataclass(frozen=True, slots=True)
class ProducerBatch:
    """An idempotent producer's call: ``sequence`` counts its calls from 0.

    Sending the same batch (same producer id and sequence) again, after a failure whose
    outcome was unknown, returns the first append's metadata instead of appending twice.
    """

    producer_id: str
    sequence: int

    def __post_init__(self) -> None:
        check_name("producer id", self.producer_id)
        if self.sequence < 0:
            raise ConfigError(f"sequence must be >= 0, not {self.sequence}")


@dataclass(frozen=True, slots=True)
class OffsetCommit:
    """Offsets to commit for a group: the next offset to read, per partition.

    ``member_id`` and ``generation`` identify a group member; a commit from a member that
    left the group or from an older generation is fenced. Without them, the commit is an
    admin reset, allowed only while the group has no members.
    """

    group: str
    offsets: Mapping[TopicPartition, int]
    member_id: str | None = None
    generation: int | None = None

    def __post_init__(self) -> None:
        check_name("group", self.group)
        for (topic, partition), offset in self.offsets.items():
            if offset < 0:
                raise ConfigError(f"offset for {topic}[{partition}] must be >= 0, not {offset}")


@dataclass(frozen=True, slots=True)
class Membership:
    """A member's view of its group after a join or heartbeat.

    ``assigned`` is what the current generation gives this member; ``owned`` is the part of
    it the member may fetch now. A partition moving from another member is assigned but not
    yet owned until that member has released it (or left the group), so that no partition
    is ever read by two members at once. ``revoked`` are partitions this member still owns
    but must finish, commit and release.
    """

    group: str
    member_id: str
    generation: int
    assigned: tuple[TopicPartition, ...]
    owned: tuple[TopicPartition, ...]
    revoked: tuple[TopicPartition, ...]


@dataclass(frozen=True, slots=True)
class GroupMember:
    """A live member. None: the broker does not report it (Kafka's DescribeGroups gives
    neither generations, heartbeats nor session timeouts, and topics only as assigned)."""

    member_id: str
    topics: tuple[str, ...]
    generation: int | None
    last_heartbeat: float | None
    session_timeout: float | None
    owned: tuple[TopicPartition, ...]


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None
    end: int
    owner: str | None

    @property
    def lag(self) -> int:
        """Records not yet consumed: end offset minus committed (all of them if none)."""
        return self.end - (self.committed or 0)


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A consumer group: members, who owns what, committed and end offsets, lag."""

    name: str
    generation: int | None
    assignor: str
    members: tuple[GroupMember, ...]
    partitions: tuple[PartitionLag, ...]

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def state(self) -> str:
        """Kafka's names: Empty, Stable, or PreparingRebalance while partitions move."""
        if not self.members:
            return "Empty"
        owned = sum(len(m.owned) for m in self.members)
        return "Stable" if owned == len(self.partitions) else "PreparingRebalance"


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one retention and compaction pass removed."""

    deleted: int = 0
    compacted: int = 0
    tombstones: int = 0


def check_max_records(max_records: int) -> None:
    if not 1 <= max_records <= MAX_FETCH:
        raise ConfigError(f"max_records must be 1-{MAX_FETCH}, not {max_records}")


def check_offset_at(at: str | float) -> None:
    """``list_offsets``' ``at``: "earliest", "latest", or a timestamp in epoch seconds."""
    if isinstance(at, str) and at not in ("earliest", "latest"):
        raise ConfigError(f"at must be 'earliest', 'latest' or a timestamp, not {at!r}")


def check_assignor(name: str) -> str:
    if name not in ASSIGNORS:
        raise ConfigError(f"unknown assignor {name!r}; use one of {', '.join(sorted(ASSIGNORS))}")
    return name


def check_join(group: str, topics: Sequence[str], session_timeout: float, assignor: str) -> int:
    """Refuse a bad ``join_group`` call; the session timeout in ms."""
    check_name("group", group)
    check_assignor(assignor)
    if not topics:
        raise ConfigError("subscribe to at least one topic")
    return int((seconds(session_timeout, "session_timeout", positive=True) or 0) * 1000)
