"""/health: ok, degraded when a threshold is crossed, down when the broker cannot be opened."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from conveyor import Message, QueueSpec
from conveyor.app import App
from conveyor.assignors import TopicPartition
from conveyor.brokers.stream_types import OffsetCommit
from conveyor.errors import PermanentError
from conveyor.server import AlertThresholds
from conveyor.worker.consume import Worker
from tests.integration.server_support import serve


async def health(app: App, **alerts: Any) -> tuple[int, dict[str, Any]]:
    async with serve(app, alerts=AlertThresholds(**alerts)) as client:
        response = await client.get("/health")
    return response.status_code, response.json()


async def test_ok_then_degraded_when_a_queue_grows_past_its_threshold(app: App) -> None:
    broker = await app.abroker()
    await broker.declare_queue(QueueSpec("q"))
    await broker.publish_batch([Message(b"x", routing_key="q") for _ in range(3)])
    status, body = await health(app, queue_depth=3)
    assert (status, body["status"], body["reasons"]) == (200, "ok", [])
    await broker.publish(Message(b"x", routing_key="q"))
    status, body = await health(app, queue_depth=3)
    assert (status, body["status"]) == (200, "degraded")
    assert body["reasons"] == ["queue 'q' has 4 ready messages (> 3)"]


async def test_health_says_how_the_broker_keeps_what_it_confirms(app: App) -> None:
    status, body = await health(app)
    assert status == 200
    assert body["persistence"].startswith("SQLite file in WAL mode, durability=normal: ")


async def test_dead_letters_and_error_rate_degrade(app: App) -> None:
    @app.task(name="flaky", max_retries=0)
    def flaky(fail: bool) -> None:
        if fail:
            raise PermanentError("no")

    for fail in (True, True, False, False, False):
        await flaky.adelay(fail)
    await Worker(app).run_until_idle()
    assert (await health(app, dead_letters=2, error_rate=0.4))[1]["status"] == "ok"
    status, body = await health(app, dead_letters=1, error_rate=0.3)
    assert (status, body["status"]) == (200, "degraded")
    assert body["reasons"] == [
        "queue 'default.dlq' holds 2 dead letters (> 1)",
        "2 of 5 jobs finished in the last 300 s failed (40.0% > 30.0%)",
    ]
    too_few = await health(app, dead_letters=5, error_rate=0.3, error_min_jobs=6)
    assert too_few[1]["status"] == "ok"


async def test_failures_outside_the_window_do_not_count(app: App) -> None:
    @app.task(name="broken", max_retries=0)
    def broken() -> None:
        raise PermanentError("no")

    await broken.adelay()
    await Worker(app).run_until_idle()
    assert (await health(app, error_rate=0.5, dead_letters=5))[1]["status"] == "degraded"
    await asyncio.sleep(0.3)
    assert (await health(app, error_rate=0.5, dead_letters=5, error_window=0.2))[1][
        "status"
    ] == "ok"


async def test_consumer_lag_and_message_age_degrade(app: App) -> None:
    await app.acreate_topic("events", partitions=1)
    for value in range(5):
        await app.aproduce("events", value)
    broker = await app.abroker()
    await broker.commit_offsets(OffsetCommit("slow", {TopicPartition("events", 0): 1}))
    await broker.declare_queue(QueueSpec("q"))
    await broker.publish(Message(b"x", routing_key="q"))
    await asyncio.sleep(0.2)
    assert (await health(app, consumer_lag=4, oldest_age=5))[1]["status"] == "ok"
    status, body = await health(app, consumer_lag=3, oldest_age=0.1)
    assert status == 200
    assert body["status"] == "degraded"
    assert body["reasons"][0].startswith("queue 'q''s oldest ready message has waited")
    assert body["reasons"][1] == "consumer group 'slow' lags 4 records (> 3)"


async def test_down_with_503_when_the_broker_cannot_be_opened(tmp_path: Path) -> None:
    path = tmp_path / "conveyor.db"
    path.write_text("this is not a database\n" * 100)
    app = App(f"sqlite:///{path}")
    try:
        status, body = await health(app)
        assert status == 503
        assert body["status"] == "down"
        (reason,) = body["reasons"]
        assert reason.startswith("the broker cannot be reached: ")
        assert "conveyor.db is not a SQLite database" in reason
        path.unlink()  # the broker comes back: the next check opens it
        status, body = await health(app)
        assert (status, body["status"], body["reasons"]) == (200, "ok", [])
    finally:
        await app.aclose()
        app.close()
