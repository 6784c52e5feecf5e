"""The stream clients' edges: bad options, reset after retention, fencing, retries."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.app import App
from conveyor.assignors import TopicPartition
from conveyor.brokers.stream_types import ProducerRecord, Record, TopicConfig
from conveyor.errors import ConfigError, DatabaseLocked, MemberFenced, NoOffset
from conveyor.events.consumer import StreamConsumer, open_consumer
from conveyor.events.producer import Producer, encode_key, encode_value


async def test_consumer_options_are_checked(app: App) -> None:
    broker = await app.abroker()
    with pytest.raises(ConfigError, match="either topics"):
        open_consumer(broker)
    with pytest.raises(ConfigError, match="needs a group"):
        open_consumer(broker, ["t"])
    with pytest.raises(ConfigError, match="auto_offset_reset"):
        open_consumer(broker, ["t"], group="g", auto_offset_reset="oldest")
    consumer = open_consumer(broker, assign=[("t", 0)])
    with pytest.raises(ConfigError, match="needs a group"):
        await consumer.commit()
    with pytest.raises(ConfigError, match="not assigned"):
        consumer.position(("t", 0))


def test_values_and_keys_are_encoded_or_refused() -> None:
    assert encode_value(b"raw") == b"raw"
    assert encode_value("text") == b"text"
    assert encode_value(None) is None
    assert encode_value({"a": [1, 2]}) == b'{"a":[1,2]}'
    with pytest.raises(ConfigError, match="JSON"):
        encode_value(object())
    assert encode_key("k") == b"k"
    with pytest.raises(ConfigError, match="bytes or str"):
        encode_key(7)  # type: ignore[arg-type]


async def test_a_position_removed_by_retention_resets_to_the_log_start(app: App) -> None:
    await app.acreate_topic("short", 1, TopicConfig(retention=60))
    producer = await app.aproducer()
    await producer.send_batch("short", [ProducerRecord(b"old", timestamp=time.time() - 600)] * 3)
    await producer.send("short", b"new")
    consumer = await app.aconsumer(assign=[("short", 0)], auto_offset_reset="earliest")
    async with consumer:
        consumer.seek(("short", 0), 0)
        await (await app.abroker()).enforce_retention("short")
        records = await consumer.poll(timeout=0.5)  # offset 0 is gone: reset to the start
        assert [(r.offset, r.value) for r in records] == [(3, b"new")]
        await producer.send("short", b"newer")
        assert [r.value async for r in _take(consumer, 1)] == [b"newer"]
    with pytest.raises(ConfigError, match=">= 0"):
        consumer.seek(("short", 0), -1)
    strict = await app.aconsumer(assign=[("short", 0)], group="s", auto_offset_reset="none")
    with pytest.raises(NoOffset):
        await strict.poll(timeout=0.01)


async def _take(consumer: StreamConsumer, count: int) -> AsyncIterator[Record]:
    async for record in consumer:
        yield record
        count -= 1
        if not count:
            return


async def test_a_member_removed_for_silence_is_fenced_and_rejoins(app: App) -> None:
    await app.acreate_topic("beats", 2)
    options = {"group": "b", "enable_auto_commit": False, "auto_offset_reset": "earliest"}
    slow = await app.aconsumer("beats", session_timeout=0.2, **options)
    steady = await app.aconsumer("beats", session_timeout=30, heartbeat_interval=0.02, **options)
    async with slow, steady:
        await asyncio.sleep(0.3)  # slow misses its session timeout
        await steady.poll(timeout=0.05)  # the group removes slow
        assert len(steady.assignment()) == 2
        with pytest.raises(MemberFenced):
            await slow.commit({TopicPartition("beats", 0): 1})
        old_member = slow.membership
        await slow.poll(timeout=0.05)  # fenced at its heartbeat: it joins again
        assert slow.membership is not None
        assert old_member is not None
        assert slow.membership.member_id != old_member.member_id


async def test_a_producer_that_gives_up_starts_over_as_a_new_producer(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    app = App(f"sqlite:///{path}?lock_timeout=0.02")
    try:
        await app.acreate_topic("t")
        producer = Producer(await app.abroker(), retries=1, retry_backoff=0.01)
        first_id = producer.producer_id
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(DatabaseLocked):
            await producer.send("t", b"unknown outcome")
        holder.execute("ROLLBACK")
        holder.close()
        assert producer.producer_id != first_id
        placed = await producer.send("t", b"next")
        assert placed.offset == 0
        with pytest.raises(ConfigError, match="retries"):
            Producer(await app.abroker(), retries=-1)
    finally:
        await app.aclose()
