"""Topics on Redis as other Redis clients see them, and a Redis client that a cancel
always stops."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio

from conveyor import open_broker
from conveyor.assignors import TopicPartition
from conveyor.brokers.redis.broker import RedisBroker
from conveyor.brokers.stream_types import OffsetCommit, ProducerRecord, TopicConfig, TopicSpec
from tests.backend_urls import BACKENDS, REDIS_URL


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[RedisBroker]:
    """A Redis broker under a key prefix of this test's own on the shared server."""
    instance = open_broker(BACKENDS["redis"](tmp_path))
    assert isinstance(instance, RedisBroker)
    await instance.connect()
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
async def plain() -> AsyncIterator[redis.asyncio.Redis]:
    """A plain redis-py client of the same server, as another application would use."""
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


async def test_xrange_on_a_partition_shows_each_record_under_its_offset_with_readable_fields(
    broker: RedisBroker, plain: redis.asyncio.Redis
) -> None:
    await broker.create_topic(TopicSpec("clicks", partitions=2))
    records = [
        ProducerRecord(b'{"page": 1}', key=b"alice", headers={"source": "web"}, partition=1),
        ProducerRecord(None, key=b"bob", timestamp=1_700_000_000.5, partition=1),
    ]
    placed = await broker.produce("clicks", records)
    assert [m.offset for m in placed] == [0, 1]
    entries = await plain.xrange(f"{broker.endpoint.options.prefix}log:clicks:1")
    assert [entry_id for entry_id, _ in entries] == [b"1-0", b"2-0"]
    first, tombstone = (fields for _, fields in entries)
    assert first[b"value"] == b'{"page": 1}'
    assert first[b"key"] == b"alice"
    assert json.loads(first[b"headers"]) == {"source": "web"}
    assert b"value" not in tombstone
    assert tombstone[b"timestamp"] == b"1700000000500"


async def test_a_cancelled_reader_always_stops_however_often_it_is_cancelled(
    broker: RedisBroker,
) -> None:
    # Cancels land at every point of a command's send and read; each must end the task.
    await broker.create_topic(TopicSpec("idle"))
    positions = {TopicPartition("idle", 0): 0}

    async def read_for_ever() -> None:
        while True:
            await broker.fetch(positions)

    for steps in range(300):
        task = asyncio.create_task(read_for_ever())
        for _ in range(steps % 30):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=5)
        assert done, f"a cancel after {steps % 30} loop steps was lost"
        assert task.cancelled()


async def test_retention_runs_in_the_background_of_a_producing_process(tmp_path: Path) -> None:
    broker = open_broker(BACKENDS["redis"](tmp_path) + "&retention_interval=0.2")
    await broker.connect()
    try:
        await broker.create_topic(TopicSpec("audit", config=TopicConfig(retention=3600)))
        old = time.time() - 7200
        await broker.produce("audit", [ProducerRecord(b"old", timestamp=old)] * 3)
        deadline = time.monotonic() + 10
        while (await broker.describe_topic("audit")).partitions[0].start < 3:
            assert time.monotonic() < deadline, "no background pass removed the old records"
            await asyncio.sleep(0.25)
            await broker.produce("audit", [ProducerRecord(b"new")])
        (log,) = (await broker.describe_topic("audit")).partitions
        assert log.start == 3
        assert log.records == log.end - 3
    finally:
        await broker.close()


async def test_deleting_a_topic_forgets_the_groups_offsets_and_partitions_on_it(
    broker: RedisBroker,
) -> None:
    await broker.create_topic(TopicSpec("orders", partitions=2))
    await broker.create_topic(TopicSpec("refunds"))
    await broker.produce("orders", [ProducerRecord(b"x", partition=1)])
    offsets = {TopicPartition("orders", 1): 1, TopicPartition("refunds", 0): 0}
    await broker.commit_offsets(OffsetCommit("audit", offsets))
    member = await broker.join_group("readers", ["orders"], session_timeout=30)
    assert len(member.owned) == 2
    await broker.delete_topic("orders")
    await broker.create_topic(TopicSpec("orders", partitions=2))
    assert await broker.committed_offsets("audit") == {TopicPartition("refunds", 0): 0}
    assert (await broker.describe_group("readers")).partitions == ()
    assert (await broker.heartbeat_group("readers", member.member_id)).owned == member.owned


async def test_a_cancel_requested_before_a_command_is_delivered_not_lost(
    broker: RedisBroker,
) -> None:
    # As Ctrl-C does: asyncio.run cancels the main task while it runs code between awaits.
    async def cancelled_then_commands() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        for _ in range(100):
            await broker.list_topics()

    for attempt in range(50):
        task = asyncio.create_task(cancelled_then_commands())
        done, _ = await asyncio.wait([task], timeout=5)
        assert done, f"attempt {attempt}: the cancel was lost"
        assert task.cancelled(), f"attempt {attempt}: the commands ran on after the cancel"
