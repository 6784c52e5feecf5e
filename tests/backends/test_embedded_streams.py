"""Streams on the embedded engine: several processes on one file, background retention,
idempotent retries through a real lock, and the sync forms."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from conveyor import open_broker
from conveyor.app import App
from conveyor.brokers.stream_types import ProducerRecord, TopicConfig, TopicPartition, TopicSpec
from conveyor.errors import ConfigError, DatabaseLocked
from conveyor.events.producer import Producer

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)

APPENDER = """
import asyncio, sys
from conveyor import open_broker
from conveyor.brokers.stream_types import ProducerRecord

async def main(url, tag):
    async with open_broker(url) as broker:
        for n in range(50):
            records = [ProducerRecord(f"{tag}-{n}-{i}".encode(), partition=0) for i in range(20)]
            await broker.produce("shared", records)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_processes_appending_at_once_get_dense_unique_offsets(sqlite_url: str) -> None:
    async with open_broker(sqlite_url) as broker:
        await broker.create_topic(TopicSpec("shared"))
        children = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", APPENDER, sqlite_url, tag, cwd=ROOT
            )
            for tag in ("a", "b", "c")
        ]
        async with asyncio.timeout(30):
            assert [await child.wait() for child in children] == [0, 0, 0]
        records = await broker.fetch({TopicPartition("shared", 0): 0}, max_records=10_000)
    assert [r.offset for r in records] == list(range(3_000))
    for tag in "abc":
        mine = [r.value.decode() for r in records if r.value and r.value.startswith(tag.encode())]
        assert mine == [f"{tag}-{n}-{i}" for n in range(50) for i in range(20)]


async def test_retention_runs_in_the_background_while_producers_append(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bg.db'}?retention_interval=0.2"
    async with open_broker(url) as broker:
        await broker.create_topic(TopicSpec("logs", 1, TopicConfig(retention=60)))
        old = time.time() - 3600
        await broker.produce("logs", [ProducerRecord(b"old", timestamp=old)] * 12_000)
        async with asyncio.timeout(10):
            while (await broker.describe_topic("logs")).partitions[0].start < 12_000:
                await broker.produce("logs", [ProducerRecord(b"new")])
                await asyncio.sleep(0.01)
        info = (await broker.describe_topic("logs")).partitions[0]
        assert info.start == 12_000
        assert info.records == info.end - 12_000 > 0
        kept = await broker.fetch({TopicPartition("logs", 0): 12_000}, max_records=10_000)
        assert {r.value for r in kept} == {b"new"}


async def test_an_idempotent_producer_retries_through_a_held_lock(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    url = f"sqlite:///{path}?lock_timeout=0.05"
    async with open_broker(url) as broker:
        await broker.create_topic(TopicSpec("t"))
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(DatabaseLocked):
            await broker.produce("t", [ProducerRecord(b"x")])
        producer = Producer(broker, retries=8, retry_backoff=0.05)
        sending = asyncio.create_task(producer.send("t", b"through"))
        await asyncio.sleep(0.2)
        holder.execute("COMMIT")
        holder.close()
        placed = await sending
        assert placed.offset == 0
        records = await broker.fetch({TopicPartition("t", 0): 0})
        assert [r.value for r in records] == [b"through"]


def test_the_sync_forms_create_topics_and_produce_without_an_event_loop(sqlite_url: str) -> None:
    app = App(sqlite_url)
    try:
        app.create_topic("audit", 2)
        placed = app.produce("audit", {"action": "login"}, key="ada")
        assert placed.topic == "audit"
        assert placed.offset == 0
        records = app.call_sync(
            lambda broker: broker.fetch({TopicPartition("audit", placed.partition): 0})
        )
        assert [(r.key, r.value) for r in records] == [(b"ada", b'{"action":"login"}')]
    finally:
        app.close()


async def test_the_embedded_engine_refuses_more_than_one_copy_of_a_partition() -> None:
    async with open_broker("memory://") as broker:
        with pytest.raises(ConfigError, match="one copy of each partition"):
            await broker.create_topic(TopicSpec("copies", 1, replication_factor=3))
        assert await broker.list_topics() == []
        await broker.create_topic(TopicSpec("copies", 1, replication_factor=1))
        assert [spec.name for spec in await broker.list_topics()] == ["copies"]
