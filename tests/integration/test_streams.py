"""Event streams end to end: producer, consumers in groups, subscribers, exactly-once, windows."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from typing import Any

import pytest

from conveyor.app import App
from conveyor.assignors import TopicPartition
from conveyor.brokers import Broker
from conveyor.brokers.stream_types import OffsetCommit, Record
from conveyor.errors import (
    ConfigError,
    NoOffset,
    PermanentError,
    TemporaryError,
    TopicNotFound,
)
from conveyor.events.consumer import StreamConsumer
from conveyor.events.producer import record
from conveyor.events.windows import SlidingWindow, TumblingWindows
from conveyor.worker.consume import Worker


async def produce_keyed(app: App, topic: str, count: int, keys: int = 10) -> None:
    producer = await app.aproducer()
    batch = [record({"n": n, "key": n % keys}, key=f"k{n % keys}") for n in range(count)]
    await producer.send_batch(topic, batch)


async def drain(consumer: StreamConsumer, expected: int, timeout: float = 10.0) -> list[Record]:
    seen: list[Record] = []
    async with asyncio.timeout(timeout):
        while len(seen) < expected:
            seen.extend(await consumer.poll(timeout=0.2))
    return seen


async def test_two_groups_each_see_every_record(app: App) -> None:
    await app.acreate_topic("orders", 3)
    await produce_keyed(app, "orders", 60)
    for group in ("billing", "shipping"):
        consumer = await app.aconsumer("orders", group=group, auto_offset_reset="earliest")
        async with consumer:
            seen = await drain(consumer, 60)
        assert sorted(json.loads(r.value or b"")["n"] for r in seen) == list(range(60))


async def test_a_committed_group_resumes_and_a_new_group_replays(app: App) -> None:
    await app.acreate_topic("events", 1)
    await produce_keyed(app, "events", 10)
    first = await app.aconsumer("events", group="g", auto_offset_reset="earliest")
    async with first:
        batch = await first.poll(max_records=4)
        assert [r.offset for r in batch] == [0, 1, 2, 3]
        await first.commit()
    again = await app.aconsumer("events", group="g", auto_offset_reset="earliest")
    async with again:
        assert [r.offset for r in await drain(again, 6)] == [4, 5, 6, 7, 8, 9]
    latest = await app.aconsumer("events", group="late", auto_offset_reset="latest")
    async with latest:
        assert await latest.poll(timeout=0.1) == []
        await latest.seek_to_beginning()
        assert len(await drain(latest, 10)) == 10
    strict = await app.aconsumer("events", group="strict", auto_offset_reset="none")
    with pytest.raises(NoOffset):
        await strict.start()


async def test_seek_pause_and_resume_with_assigned_partitions(app: App) -> None:
    await app.acreate_topic("clicks", 2)
    producer = await app.aproducer()
    for partition in (0, 1):
        await producer.send_batch(
            "clicks",
            [
                record(f"{partition}-{n}", partition=partition, timestamp=100.0 + n)
                for n in range(5)
            ],
        )
    consumer = await app.aconsumer(
        assign=[("clicks", 0), ("clicks", 1)], auto_offset_reset="earliest"
    )
    async with consumer:
        consumer.pause(("clicks", 1))
        assert {r.partition for r in await drain(consumer, 5)} == {0}
        consumer.resume(("clicks", 1))
        assert {r.partition for r in await drain(consumer, 5)} == {1}
        await consumer.seek_to_time(103.0, ("clicks", 0))
        consumer.seek(("clicks", 1), 4)
        assert consumer.position(("clicks", 0)) == 3
        assert sorted((r.partition, r.offset) for r in await drain(consumer, 3)) == [
            (0, 3),
            (0, 4),
            (1, 4),
        ]
        with pytest.raises(ConfigError):
            consumer.seek(("clicks", 9), 0)


async def test_per_key_order_holds_and_nothing_is_skipped_across_rebalances(app: App) -> None:
    """Members join and leave while records flow; each key's records arrive in order."""
    await app.acreate_topic("ledger", 6)
    await produce_keyed(app, "ledger", 600, keys=12)
    seen: dict[str, list[int]] = defaultdict(list)
    options = {"group": "ledger-g", "auto_offset_reset": "earliest", "heartbeat_interval": 0.05}

    async def member(polls: int, joins_after: float) -> None:
        await asyncio.sleep(joins_after)
        consumer = await app.aconsumer("ledger", **options)
        async with consumer:
            for _ in range(polls):
                for item in await consumer.poll(timeout=0.05, max_records=4):
                    body = json.loads(item.value or b"")
                    seen[f"k{body['key']}"].append(body["n"])
                await consumer.commit()
                await asyncio.sleep(0.01)
            generations.add(consumer.membership.generation if consumer.membership else 0)

    # three members overlap: joins and leaves rebalance the group while it reads
    generations: set[int] = set()
    await asyncio.gather(member(30, 0.0), member(30, 0.1), member(60, 0.2))
    assert len(generations) > 1
    rest = await app.aconsumer("ledger", **options)
    async with rest:
        total = sum(len(v) for v in seen.values())
        assert 0 < total < 600
        for item in await drain(rest, 600 - total):
            body = json.loads(item.value or b"")
            seen[f"k{body['key']}"].append(body["n"])
        assert await rest.poll(timeout=0.1) == []
    for key, numbers in seen.items():
        assert numbers == sorted(numbers), f"{key} out of order"
    everything = sorted(n for numbers in seen.values() for n in numbers)
    assert everything == list(range(600))  # none skipped, none seen twice


async def test_only_uncommitted_records_are_seen_again_after_a_member_dies(app: App) -> None:
    await app.acreate_topic("jobs", 1)
    await produce_keyed(app, "jobs", 20)
    dying = await app.aconsumer(
        "jobs",
        group="w",
        session_timeout=0.3,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await dying.start()
    first = await dying.poll(max_records=8)
    await dying.commit({TopicPartition("jobs", 0): 5})  # processed 5 of the 8 it read
    # it dies here: no close, no more heartbeats
    await asyncio.sleep(0.4)
    survivor = await app.aconsumer("jobs", group="w", auto_offset_reset="earliest")
    async with survivor:
        again = await drain(survivor, 15)
    assert [r.offset for r in first] == list(range(8))
    assert [r.offset for r in again] == list(range(5, 20))


async def test_consume_transform_produce_commits_exactly_once(app: App) -> None:
    await app.acreate_topic("raw", 1)
    await app.acreate_topic("clean", 1)
    await produce_keyed(app, "raw", 10)
    consumer = await app.aconsumer(
        "raw", group="etl", enable_auto_commit=False, auto_offset_reset="earliest"
    )
    producer = await app.aproducer()
    async with consumer:
        batch = await consumer.poll(max_records=10)
        member = consumer.membership
        assert member is not None
        commit = OffsetCommit(
            "etl",
            {TopicPartition("raw", 0): batch[-1].offset + 1},
            member.member_id,
            member.generation,
        )
        derived = [record(json.loads(r.value or b"")["n"] * 2) for r in batch]
        await producer.send_batch("clean", derived, commit=commit)
    broker = await app.abroker()
    assert await broker.committed_offsets("etl") == {TopicPartition("raw", 0): 10}
    out = await broker.fetch({TopicPartition("clean", 0): 0})
    assert [json.loads(r.value or b"") for r in out] == [n * 2 for n in range(10)]


async def test_a_subscriber_retries_then_dead_letters_and_moves_on(app: App) -> None:
    await app.acreate_topic("order-events", 1)
    attempts: dict[int, int] = defaultdict(int)
    handled: list[int] = []

    @app.subscriber("order-events", group="inventory", max_retries=2, backoff=[0.01, 0.01])
    async def reserve(item: Record) -> None:
        n = json.loads(item.value or b"")["n"]
        attempts[n] += 1
        if n == 3:
            raise PermanentError("no such product")
        if n == 5 and attempts[n] < 3:
            raise TemporaryError("warehouse busy")
        handled.append(n)

    await produce_keyed(app, "order-events", 8)
    worker = Worker(app, concurrency=1)
    running = asyncio.create_task(worker.run())
    broker = await app.abroker()
    async with asyncio.timeout(10):
        while len(handled) < 7:
            await asyncio.sleep(0.02)
    worker.stop()
    await running
    assert handled == [0, 1, 2, 4, 5, 6, 7]
    assert attempts[5] == 3
    assert attempts[3] == 1
    (dead,) = await broker.fetch({TopicPartition("order-events.dlq", 0): 0})
    assert dead.key == b"k3"
    assert dead.headers["x-original-topic"] == "order-events"
    assert (dead.headers["x-original-partition"], dead.headers["x-original-offset"]) == ("0", "3")
    assert dead.headers["x-error-type"] == "PermanentError"
    assert "no such product" in dead.headers["x-error-message"]
    assert await broker.committed_offsets("inventory") == {TopicPartition("order-events", 0): 8}


async def test_windows_count_clicks_and_raise_alerts_from_a_topic(app: App) -> None:
    await app.acreate_topic("clicks", 1)
    await app.acreate_topic("alerts", 1)
    producer = await app.aproducer()
    clicks = [
        record(
            {"user": "bot" if n % 2 else f"u{n}", "page": f"/p{n % 3}"},
            timestamp=1_000.0 + n * 0.25,
        )
        for n in range(400)
    ]
    await producer.send_batch("clicks", clicks)
    per_page = TumblingWindows(size=60)
    per_user = SlidingWindow(size=60)
    counts: dict[tuple[str, float], int] = {}
    consumer = await app.aconsumer("clicks", group="analytics", auto_offset_reset="earliest")
    async with consumer:
        for item in await drain(consumer, 400):
            body = json.loads(item.value or b"")
            for closed in per_page.add(body["page"], item.timestamp):
                counts[(closed.key, closed.start)] = closed.count
            window = per_user.add(body["user"], item.timestamp)
            if window.count > 100:
                await producer.send(
                    "alerts", {"user": body["user"], "clicks": window.count}, key=body["user"]
                )
    for closed in per_page.flush():
        counts[(closed.key, closed.start)] = closed.count
    assert sum(counts.values()) == 400
    assert counts[("/p0", 1_020.0)] == sum(
        1 for n in range(400) if n % 3 == 0 and 1_020 <= 1_000 + n * 0.25 < 1_080
    )
    broker = await app.abroker()
    alerts = await broker.fetch({TopicPartition("alerts", 0): 0}, max_records=1000)
    assert alerts
    assert {json.loads(a.value or b"")["user"] for a in alerts} == {"bot"}


async def count_pages(app: App, group: str) -> tuple[dict[tuple[str, float], int], int]:
    """Clicks per page per minute, as a group member reading ``clicks`` from the start
    sees them: each partition's records fed with its partition, idle once caught up."""
    broker = await app.abroker()
    windows = TumblingWindows(size=60)
    counts: dict[tuple[str, float], int] = defaultdict(int)
    consumer = await app.aconsumer("clicks", group=group, auto_offset_reset="earliest")
    async with consumer:
        await consumer.start()
        closed = windows.assign(consumer.assignment())
        ends = await broker.list_offsets(sorted(consumer.assignment()))
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            for item in await consumer.poll(timeout=0.2, max_records=37):
                page = json.loads(item.value or b"")["page"]
                closed += windows.add(page, item.timestamp, partition=item.topic_partition)
            for tp, end in ends.items():
                if consumer.position(tp) >= end:
                    closed += windows.idle(tp)
    for result in [*closed, *windows.flush()]:
        counts[(result.key, result.start)] += result.count
    return counts, windows.late


async def test_windowed_counts_over_partitions_match_what_was_sent_live_and_replayed(
    app: App,
) -> None:
    await app.acreate_topic("clicks", 4)
    producer = await app.aproducer()
    sent: dict[tuple[str, float], int] = defaultdict(int)
    clicks = []
    for n in range(541):
        timestamp = 10_000.0 + n * 1.3
        page = f"/p{n % 7}"
        clicks.append(record({"page": page}, key=f"user{n % 23}", timestamp=timestamp))
        sent[(page, timestamp // 60 * 60)] += 1
    await producer.send_batch("clicks", clicks)

    counted, late = await count_pages(app, "live")
    assert (dict(counted), late) == (dict(sent), 0)
    replayed, late = await count_pages(app, "replay")  # a new group reads it all again
    assert (dict(replayed), late) == (dict(sent), 0)


async def test_auto_commit_stores_positions_on_its_interval(app: App) -> None:
    await app.acreate_topic("metrics", 1)
    await produce_keyed(app, "metrics", 5)
    consumer = await app.aconsumer(
        "metrics", group="m", auto_offset_reset="earliest", auto_commit_interval=0.05
    )
    broker = await app.abroker()
    async with consumer:
        assert len(await drain(consumer, 5)) == 5
        await asyncio.sleep(0.06)
        await consumer.poll(timeout=0.01)
        assert await broker.committed_offsets("m") == {TopicPartition("metrics", 0): 5}


async def test_on_revoke_runs_before_a_partition_moves(app: App) -> None:
    await app.acreate_topic("moves", 2)
    revoked: list[list[TopicPartition]] = []

    async def on_revoke(partitions: list[TopicPartition]) -> None:
        revoked.append(partitions)
        await first.commit({tp: first.position(tp) for tp in partitions})

    first = await app.aconsumer(
        "moves", group="r", enable_auto_commit=False, on_revoke=on_revoke, heartbeat_interval=0.05
    )
    second = await app.aconsumer("moves", group="r", heartbeat_interval=0.05)
    async with first, second:
        assert first.assignment() == {TopicPartition("moves", 0), TopicPartition("moves", 1)}
        await second.start()
        async with asyncio.timeout(5):
            while not second.assignment():
                await first.poll(timeout=0.02)
                await second.poll(timeout=0.02)
        (moved,) = second.assignment()  # which one depends on the random member ids
        assert revoked == [[moved]]
        assert first.assignment() == {TopicPartition("moves", 0), TopicPartition("moves", 1)} - {
            moved
        }


async def dead_letters(broker: Broker, topic: str) -> int:
    """Records in a dead-letter topic, 0 until the subscriber has created it."""
    try:
        return (await broker.describe_topic(topic)).records
    except TopicNotFound:
        return 0


async def test_emitting_to_a_missing_topic_dead_letters_the_record_that_emitted(app: App) -> None:
    app.auto_create_topics = False
    await app.acreate_topic("clicks", 1)
    producer = await app.aproducer()

    @app.subscriber("clicks", group="counts", max_retries=1, backoff=[0.01])
    async def count(item: Record) -> None:
        await producer.send("page-clicks-5m", {"count": 1})  # never created

    await producer.send("clicks", {"page": "/"}, key="u1")
    worker = Worker(app, concurrency=1)
    running = asyncio.create_task(worker.run())
    broker = await app.abroker()
    try:
        async with asyncio.timeout(10):
            while not await dead_letters(broker, "clicks.dlq"):
                await asyncio.sleep(0.02)
    finally:
        worker.stop()
        await running
    (dead,) = await broker.fetch({TopicPartition("clicks.dlq", 0): 0})
    assert dead.headers["x-error-type"] == "TopicNotFound"
    assert "page-clicks-5m" in dead.headers["x-error-message"]
    assert dead.headers["x-attempts"] == "2"


async def test_missing_topics_are_created_on_first_produce_consume_and_subscribe(
    app: App,
) -> None:
    await app.aproduce("signups", {"user": 1})
    consumer = await app.aconsumer("audit-trail", group="auditors")
    async with consumer:
        assert await consumer.poll(timeout=0.05) == []
    seen: list[Any] = []

    @app.subscriber("payments", group="ledger")
    async def book(item: Record) -> None:
        seen.append(item.json())

    worker = Worker(app, concurrency=1)
    running = asyncio.create_task(worker.run())
    broker = await app.abroker()
    try:
        async with asyncio.timeout(10):
            while True:
                with contextlib.suppress(TopicNotFound):
                    await broker.describe_topic("payments")
                    break
                await asyncio.sleep(0.02)
        await app.aproduce("payments", {"cents": 500})
        async with asyncio.timeout(10):
            while not seen:
                await asyncio.sleep(0.02)
    finally:
        worker.stop()
        await running
    assert seen == [{"cents": 500}]
    for topic in ("signups", "audit-trail", "payments"):
        assert len((await broker.describe_topic(topic)).partitions) == 1


async def test_without_auto_create_a_missing_topic_names_the_command_and_the_worker_goes_on(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    app.auto_create_topics = False
    with pytest.raises(TopicNotFound, match="conveyor topics create signups"):
        await app.aproduce("signups", {"user": 1})

    @app.subscriber("payments", group="ledger")
    async def book(item: Record) -> None:
        return None

    @app.task
    def still_runs() -> str:
        return "ran"

    job = await still_runs.adelay()
    worker = Worker(app, concurrency=1, subscriber_retry_interval=0.05)
    running = asyncio.create_task(worker.run())
    try:
        assert await job.aresult(timeout=10) == "ran"
        await app.acreate_topic("payments")
        async with asyncio.timeout(10):
            while "ledger" not in await (await app.abroker()).list_groups():
                await asyncio.sleep(0.02)
    finally:
        worker.stop()
        await running
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("subscriber" in m and "cannot start" in m and "payments" in m for m in errors)


async def test_a_sync_subscriber_runs_in_a_thread_and_commits_each_batch(app: App) -> None:
    await app.acreate_topic("audit", 2)
    handled: list[tuple[int, int]] = []

    @app.subscriber("audit", group="archive")
    def archive(item: Record) -> None:
        handled.append((item.partition, item.offset))

    with pytest.raises(ConfigError, match="already registered"):
        app.subscriber("audit", group="archive", name=archive.name)(lambda item: None)
    producer = await app.aproducer()
    await producer.send_batch("audit", [record(n, partition=n % 2) for n in range(10)])
    worker = Worker(app, concurrency=1)
    running = asyncio.create_task(worker.run())
    async with asyncio.timeout(10):
        while len(handled) < 10:
            await asyncio.sleep(0.02)
    worker.stop()
    await running
    assert sorted(handled) == [(p, o) for p in (0, 1) for o in range(5)]
    broker = await app.abroker()
    committed = await broker.committed_offsets("archive")
    assert committed == {TopicPartition("audit", 0): 5, TopicPartition("audit", 1): 5}
