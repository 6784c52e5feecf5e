"""/metrics, read line by line after real jobs ran on the real Worker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conveyor import Message, QueueSpec
from conveyor.app import App
from conveyor.assignors import TopicPartition
from conveyor.brokers.stream_types import OffsetCommit
from conveyor.errors import PermanentError
from conveyor.worker.consume import Worker
from tests.integration.server_support import Metrics, serve


async def scrape(app: App, **settings: object) -> Metrics:
    async with serve(app, **settings) as client:  # type: ignore[arg-type]
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return Metrics(response.text)


async def test_queue_and_job_metrics_after_real_jobs(app: App) -> None:
    @app.task(name="resize")
    async def resize(image: int) -> int:
        await asyncio.sleep(0.03)
        return image

    @app.task(name="charge", max_retries=0)
    def charge(order: int) -> None:
        raise PermanentError("declined")

    for image in range(3):
        await resize.adelay(image)
    await charge.adelay(1)
    await Worker(app).run_until_idle()
    await resize.adelay(99)  # waiting

    metrics = await scrape(app)
    assert metrics.get("conveyor_broker_up") == 1
    assert metrics.get("conveyor_queue_messages_ready", queue="default") == 1
    assert metrics.get("conveyor_queue_messages_unacked", queue="default") == 0
    assert metrics.get("conveyor_queue_messages_delayed", queue="default") == 0
    assert metrics.get("conveyor_queue_oldest_message_age_seconds", queue="default") >= 0
    assert metrics.get("conveyor_queue_published_total", queue="default") == 5
    assert metrics.get("conveyor_queue_delivered_total", queue="default") == 4
    assert metrics.get("conveyor_queue_acked_total", queue="default") == 3
    assert metrics.get("conveyor_queue_dead_lettered_total", queue="default") == 1
    assert metrics.get("conveyor_queue_messages_ready", queue="default.dlq") == 1
    dead_letters = {"queue": "default", "dead_letter_queue": "default.dlq"}
    assert metrics.get("conveyor_queue_dead_letters", **dead_letters) == 1
    assert metrics.types["conveyor_queue_acked_total"] == "counter"
    assert metrics.types["conveyor_queue_messages_ready"] == "gauge"

    assert metrics.get("conveyor_jobs", task="resize", status="succeeded") == 3
    assert metrics.get("conveyor_jobs", task="resize", status="queued") == 1
    assert metrics.get("conveyor_jobs", task="charge", status="dead") == 1
    assert metrics.get("conveyor_jobs", task="charge", status="succeeded") == 0

    name = "conveyor_job_duration_seconds"
    assert metrics.types[name] == "histogram"
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for labels, value in metrics.named(f"{name}_bucket").items()
        if dict(labels)["task"] == "resize"
    )
    counts = [count for _, count in buckets]
    assert counts == sorted(counts), "buckets are cumulative"
    assert buckets[-1] == (float("inf"), 3)
    assert metrics.get(f"{name}_bucket", task="resize", le="0.025") == 0
    assert metrics.get(f"{name}_bucket", task="resize", le="5") == 3
    assert metrics.get(f"{name}_count", task="resize") == 3
    assert 0.09 <= metrics.get(f"{name}_sum", task="resize") < 3
    assert metrics.get(f"{name}_count", task="charge") == 1


async def test_ready_depth_and_oldest_age_of_a_plain_queue(app: App) -> None:
    broker = await app.abroker()
    await broker.declare_queue(QueueSpec("plain"))
    await broker.publish(Message(b"1", routing_key="plain"))
    await asyncio.sleep(0.05)
    await broker.publish(Message(b"2", routing_key="plain"))
    await broker.publish(Message(b"3", routing_key="plain"), delay=60)
    await broker.receive("plain", max_messages=1)
    metrics = await scrape(app)
    assert metrics.get("conveyor_queue_messages_ready", queue="plain") == 1
    assert metrics.get("conveyor_queue_messages_unacked", queue="plain") == 1
    assert metrics.get("conveyor_queue_messages_delayed", queue="plain") == 1
    assert metrics.get("conveyor_queue_bytes", queue="plain") == 3
    assert 0 <= metrics.get("conveyor_queue_oldest_message_age_seconds", queue="plain") < 5


async def test_consumer_lag_per_group_topic_and_partition(app: App) -> None:
    await app.acreate_topic("clicks", partitions=2)
    for value in range(4):
        await app.aproduce("clicks", value, partition=0 if value < 3 else 1)
    broker = await app.abroker()
    offsets = {TopicPartition("clicks", 0): 1, TopicPartition("clicks", 1): 1}
    await broker.commit_offsets(OffsetCommit("stats", offsets))
    metrics = await scrape(app)
    assert metrics.get("conveyor_consumer_lag", group="stats", topic="clicks", partition="0") == 2
    assert metrics.get("conveyor_consumer_lag", group="stats", topic="clicks", partition="1") == 0


async def test_workers_alive_and_their_counts(app: App) -> None:
    @app.task(name="noop")
    def noop() -> None:
        return None

    await noop.adelay()
    worker = Worker(app, heartbeat_interval=0.05)
    running = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            metrics = await scrape(app)
            alive = metrics.get("conveyor_workers_alive")
            if alive == 1 and metrics.samples.get(
                ("conveyor_worker_processed_total", frozenset({("worker", worker.id)}))
            ):
                break
            await asyncio.sleep(0.05)
        assert metrics.get("conveyor_workers_alive") == 1
        assert metrics.get("conveyor_workers_lost") == 0
        assert metrics.get("conveyor_worker_processed_total", worker=worker.id) == 1
        assert metrics.get("conveyor_worker_running_jobs", worker=worker.id) == 0
    finally:
        worker.stop()
        await running
    assert (await scrape(app)).get("conveyor_workers_alive") == 0


async def test_label_values_are_escaped(app: App) -> None:
    odd = 'say "hi"\\there\nnow'

    @app.task(name=odd)
    def greet() -> None:
        return None

    await greet.adelay()
    async with serve(app) as client:
        text = (await client.get("/metrics")).text
    assert 'conveyor_jobs{task="say \\"hi\\"\\\\there\\nnow",status="queued"} 1' in text
    assert Metrics(text).get("conveyor_jobs", task=odd, status="queued") == 1


async def test_an_unreachable_broker_scrapes_as_down(tmp_path: Path) -> None:
    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_text("shopping list\n" * 100)
    app = App(f"sqlite:///{not_a_database}")
    try:
        metrics = await scrape(app)
    finally:
        await app.aclose()
        app.close()
    assert metrics.samples == {("conveyor_broker_up", frozenset()): 0}


async def test_figures_are_cached_until_the_api_changes_something(app: App) -> None:
    broker = await app.abroker()
    await broker.declare_queue(QueueSpec("q"))
    async with serve(app, cache_seconds=60) as client:
        before = Metrics((await client.get("/metrics")).text)
        await broker.publish(Message(b"elsewhere", routing_key="q"))
        cached = Metrics((await client.get("/metrics")).text)
        listed = (await client.get("/api/queues/q")).json()
        await client.post("/api/queues/q/messages", json={"body": "through the api"})
        fresh = Metrics((await client.get("/metrics")).text)
    assert before.get("conveyor_queue_messages_ready", queue="q") == 0
    assert cached.get("conveyor_queue_messages_ready", queue="q") == 0
    assert listed["stats"]["ready"] == 0
    assert fresh.get("conveyor_queue_messages_ready", queue="q") == 2
