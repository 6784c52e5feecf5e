"""Topics, appends, reads, offsets, idempotent producers, retention and compaction."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor import Broker, Capability
from conveyor.brokers.stream_types import (
    CleanupPolicy,
    OffsetCommit,
    ProducerBatch,
    ProducerRecord,
    TopicConfig,
    TopicPartition,
    TopicSpec,
)
from conveyor.errors import (
    ConfigError,
    MemberFenced,
    MessageTooLarge,
    OffsetOutOfRange,
    PartitionNotFound,
    SequenceError,
    TopicNotFound,
)
from conveyor.partitioner import partition_for_key

pytestmark = pytest.mark.needs(Capability.STREAMS)

TANSU_END_OFFSET = pytest.mark.broker_fault(
    "kafka", "Tansu 0.6 reports the base offset of the last batch + 1 as a partition's end"
)
TANSU_NO_CREATE_PARTITIONS = pytest.mark.broker_fault(
    "kafka", "Tansu 0.6 does not implement CreatePartitions"
)


def values(*items: bytes, key: bytes | None = None) -> list[ProducerRecord]:
    return [ProducerRecord(item, key=key) for item in items]


async def read_all(broker: Broker, topic: str, partition: int = 0, offset: int = 0) -> list[bytes]:
    records = await broker.fetch({TopicPartition(topic, partition): offset}, max_records=10_000)
    return [record.value or b"" for record in records]


@TANSU_NO_CREATE_PARTITIONS
async def test_create_list_describe_alter_and_delete_a_topic(broker: Broker, name: str) -> None:
    spec = TopicSpec(name, 3, TopicConfig(retention=3600))
    await broker.create_topic(spec)
    await broker.create_topic(spec)  # the same spec again: a no-op
    assert spec in await broker.list_topics()
    info = await broker.describe_topic(name)
    assert info.spec == spec
    assert [(p.partition, p.start, p.end) for p in info.partitions] == [
        (0, 0, 0),
        (1, 0, 0),
        (2, 0, 0),
    ]
    altered = await broker.alter_topic(name, partitions=5)
    assert altered.partitions == 5
    assert len((await broker.describe_topic(name)).partitions) == 5
    await broker.delete_topic(name)
    assert name not in [s.name for s in await broker.list_topics()]
    with pytest.raises(TopicNotFound):
        await broker.describe_topic(name)


@TANSU_END_OFFSET
async def test_topic_changes_that_would_lose_data_are_refused(broker: Broker, name: str) -> None:
    await broker.create_topic(TopicSpec(name, 4))
    await broker.produce(name, values(b"a", b"b"))
    with pytest.raises(ConfigError, match="only grow"):
        await broker.alter_topic(name, partitions=2)
    with pytest.raises(ConfigError, match="alter_topic"):
        await broker.create_topic(TopicSpec(name, 8))
    info = await broker.describe_topic(name)
    assert info.spec.partitions == 4
    assert info.records == 2


@pytest.mark.needs(Capability.REPLAY)
async def test_records_get_dense_offsets_and_come_back_in_order(broker: Broker, name: str) -> None:
    await broker.create_topic(TopicSpec(name))
    first = await broker.produce(name, values(b"a", b"b", b"c"))
    second = await broker.produce(
        name, [ProducerRecord(b"d", key=b"k", headers={"h": "v"}, timestamp=1_700_000_000.5)]
    )
    assert [m.offset for m in first + second] == [0, 1, 2, 3]
    records = await broker.fetch({TopicPartition(name, 0): 1})
    assert [(r.offset, r.value) for r in records] == [(1, b"b"), (2, b"c"), (3, b"d")]
    last = records[-1]
    assert (last.key, dict(last.headers), last.timestamp) == (b"k", {"h": "v"}, 1_700_000_000.5)
    assert await broker.fetch({TopicPartition(name, 0): 4}) == []


async def test_keys_land_where_kafka_would_put_them(broker: Broker, name: str) -> None:
    await broker.create_topic(TopicSpec(name, 7))
    keys = [f"user-{i}".encode() for i in range(50)]
    placed = await broker.produce(name, [ProducerRecord(b"v", key=k) for k in keys])
    assert [m.partition for m in placed] == [partition_for_key(k, 7) for k in keys]


async def test_records_without_a_key_stick_to_one_partition_per_batch(
    broker: Broker, name: str
) -> None:
    await broker.create_topic(TopicSpec(name, 4))
    batches = [await broker.produce(name, values(*[b"x"] * 10)) for _ in range(8)]
    for batch in batches:
        assert len({m.partition for m in batch}) == 1
    assert len({batch[0].partition for batch in batches}) > 1


async def test_an_explicit_partition_is_used_and_checked(broker: Broker, name: str) -> None:
    await broker.create_topic(TopicSpec(name, 2))
    (placed,) = await broker.produce(name, [ProducerRecord(b"v", key=b"k", partition=1)])
    assert placed.partition == 1
    with pytest.raises(PartitionNotFound):
        await broker.produce(name, [ProducerRecord(b"v", partition=2)])
    with pytest.raises(PartitionNotFound):
        await broker.fetch({TopicPartition(name, 5): 0})


@pytest.mark.broker_fault("kafka", "Tansu 0.6 does not enforce max.message.bytes")
async def test_bad_records_are_refused_and_nothing_is_stored(broker: Broker, name: str) -> None:
    await broker.create_topic(TopicSpec(name, 1, TopicConfig(max_message_bytes=10)))
    with pytest.raises(MessageTooLarge):
        await broker.produce(name, values(b"ok", b"x" * 11))
    with pytest.raises(TopicNotFound):
        await broker.produce(f"{name}-missing", values(b"a"))
    assert (await broker.describe_topic(name)).partitions[0].end == 0


@pytest.mark.broker_fault(
    "kafka", "Tansu 0.6 answers a fetch past the log end with neither records nor an error"
)
async def test_reading_outside_the_log_is_an_error(broker: Broker, name: str) -> None:
    await broker.create_topic(TopicSpec(name))
    await broker.produce(name, values(b"a"))
    with pytest.raises(OffsetOutOfRange) as raised:
        await broker.fetch({TopicPartition(name, 0): 5})
    assert (raised.value.start, raised.value.end) == (0, 1)


async def test_a_waiting_fetch_wakes_when_a_record_arrives(broker: Broker, name: str) -> None:
    await broker.create_topic(TopicSpec(name))
    wait = 10.0
    waiting = asyncio.create_task(broker.fetch({TopicPartition(name, 0): 0}, wait=wait))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await broker.produce(name, values(b"wake"))
    records = await waiting
    assert [r.value for r in records] == [b"wake"]
    assert time.monotonic() - started < wait / 2  # woken by the record, not the timeout


@TANSU_END_OFFSET
async def test_offsets_by_position_and_by_time(broker: Broker, name: str) -> None:
    await broker.create_topic(TopicSpec(name))
    await broker.produce(name, [ProducerRecord(b"v", timestamp=t) for t in (100.0, 200.0, 300.0)])
    tp = TopicPartition(name, 0)
    assert await broker.list_offsets([tp], at="earliest") == {tp: 0}
    assert await broker.list_offsets([tp], at="latest") == {tp: 3}
    assert await broker.list_offsets([tp], at=150.0) == {tp: 1}
    assert await broker.list_offsets([tp], at=999.0) == {tp: 3}
    with pytest.raises(ConfigError):
        await broker.list_offsets([tp], at="middle")


@pytest.mark.needs(Capability.IDEMPOTENT_PRODUCE)
async def test_a_retried_idempotent_batch_is_not_appended_twice(broker: Broker, name: str) -> None:
    await broker.create_topic(TopicSpec(name))
    first = await broker.produce(name, values(b"a", b"b"), batch=ProducerBatch("p1", 0))
    again = await broker.produce(name, values(b"a", b"b"), batch=ProducerBatch("p1", 0))
    assert again == first
    await broker.produce(name, values(b"c"), batch=ProducerBatch("p1", 1))
    assert await read_all(broker, name) == [b"a", b"b", b"c"]
    with pytest.raises(SequenceError):
        await broker.produce(name, values(b"d"), batch=ProducerBatch("p1", 5))
    assert await read_all(broker, name) == [b"a", b"b", b"c"]


@pytest.mark.needs(Capability.RETENTION)
async def test_time_retention_moves_the_log_start(broker: Broker, name: str) -> None:
    await broker.create_topic(TopicSpec(name, 1, TopicConfig(retention=60)))
    old = time.time() - 120
    await broker.produce(name, [ProducerRecord(b"old", timestamp=old)] * 3)
    await broker.produce(name, values(b"new"))
    report = await broker.enforce_retention(name)
    assert report.deleted == 3
    assert await read_all(broker, name, offset=3) == [b"new"]
    with pytest.raises(OffsetOutOfRange):
        await broker.fetch({TopicPartition(name, 0): 0})
    tp = TopicPartition(name, 0)
    assert await broker.list_offsets([tp], at="earliest") == {tp: 3}


@pytest.mark.needs(Capability.RETENTION)
async def test_size_retention_keeps_the_newest_bytes(broker: Broker, name: str) -> None:
    await broker.create_topic(TopicSpec(name, 1, TopicConfig(retention_bytes=30)))
    await broker.produce(name, values(*[b"0123456789"] * 5))
    await broker.enforce_retention(name)
    info = (await broker.describe_topic(name)).partitions[0]
    assert (info.start, info.end, info.records, info.bytes) == (2, 5, 3, 30)


@pytest.mark.needs(Capability.RETENTION, Capability.COMPACTION)
async def test_compaction_keeps_the_latest_value_per_key(broker: Broker, name: str) -> None:
    config = TopicConfig(cleanup_policy=CleanupPolicy.COMPACT, delete_retention=0)
    await broker.create_topic(TopicSpec(name, 1, config))
    await broker.produce(
        name,
        [
            ProducerRecord(b"a1", key=b"a"),
            ProducerRecord(b"b1", key=b"b"),
            ProducerRecord(b"a2", key=b"a"),
            ProducerRecord(None, key=b"b"),  # a tombstone: b is deleted
            ProducerRecord(b"c1", key=b"c"),
        ],
    )
    report = await broker.enforce_retention(name)
    assert (report.compacted, report.tombstones) == (2, 1)
    records = await broker.fetch({TopicPartition(name, 0): 0})
    assert [(r.offset, r.key, r.value) for r in records] == [(2, b"a", b"a2"), (4, b"c", b"c1")]
    with pytest.raises(ConfigError, match="needs a key"):
        await broker.produce(name, values(b"no key"))


@pytest.mark.needs(Capability.CONSUMER_GROUPS, Capability.TRANSACTIONAL_PRODUCE)
async def test_produce_and_commit_happen_together_or_not_at_all(broker: Broker, name: str) -> None:
    await broker.create_topic(TopicSpec(name))
    await broker.create_topic(TopicSpec(f"{name}-out"))
    group, source = f"{name}-g", TopicPartition(name, 0)
    await broker.produce(f"{name}-out", values(b"derived"), commit=OffsetCommit(group, {source: 7}))
    assert await broker.committed_offsets(group) == {source: 7}
    async with broker.open_group([name], group, enable_auto_commit=False) as consumer:
        member = consumer.membership
        assert member is not None
        fenced = OffsetCommit(group, {source: 9}, member_id="someone-else", generation=1)
        with pytest.raises(MemberFenced):
            await broker.produce(f"{name}-out", values(b"lost"), commit=fenced)
        assert await broker.committed_offsets(group) == {source: 7}
        ours = OffsetCommit(group, {source: 8}, member.member_id, member.generation)
        await broker.produce(f"{name}-out", values(b"next"), commit=ours)
    assert await read_all(broker, f"{name}-out") == [b"derived", b"next"]
    assert await broker.committed_offsets(group) == {source: 8}


@pytest.mark.needs(Capability.RETENTION, Capability.COMPACTION)
async def test_turning_compaction_on_compacts_what_was_written_before(
    broker: Broker, name: str
) -> None:
    await broker.create_topic(TopicSpec(name))
    await broker.produce(name, [ProducerRecord(v, key=b"k") for v in (b"1", b"2", b"3")])
    await broker.alter_topic(name, config=TopicConfig(cleanup_policy=CleanupPolicy.COMPACT))
    assert (await broker.enforce_retention(name)).compacted == 2
    assert await read_all(broker, name) == [b"3"]
