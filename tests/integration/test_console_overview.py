"""The console's overview as an operator reads it, on real data: consumers per queue (a
backlog nobody takes from stands out), workers, consumer-group lag against its alert
threshold, stream dead-letter topics, and charts whose history outlives the server."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import unescape

import httpx

from conveyor import QueueSpec, Record
from conveyor.app import App
from conveyor.assignors import TopicPartition
from conveyor.brokers.stream_types import OffsetCommit, ProducerRecord
from conveyor.brokers.types import WorkerInfo
from conveyor.errors import PermanentError
from conveyor.message import Message
from conveyor.server import AlertThresholds, ServerSettings, create_server
from conveyor.worker.consume import Worker
from tests.integration.console_support import console, logged_in, page, register

LOST_AFTER_S = 2.0
"""worker_lost_after of the overview's console: far above how long it takes to start."""


@asynccontextmanager
async def running_worker(app: App, queues: list[str]) -> AsyncIterator[Worker]:
    """A real worker on ``queues``, once its first heartbeat is in the registry."""
    worker = Worker(app, queues=queues, concurrency=1)
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(10):
            while not await app.aworkers():
                await asyncio.sleep(0.02)
        yield worker
    finally:
        worker.stop()
        await task


async def test_a_backlog_no_live_worker_takes_from_is_flagged_and_consumed_queues_count_workers(
    app: App,
) -> None:
    register(app)
    broker = await app.abroker()
    await broker.declare_queue(QueueSpec("reports"))
    for number in range(3):
        await broker.publish(Message(f"report {number}".encode(), routing_key="reports"))
    await app.ensure_queue(broker, "mail")
    async with running_worker(app, ["mail"]), console(app) as client:
        await logged_in(client)
        overview = await page(client, "/")
        reports = await page(client, "/queues/reports")
        mail = await page(client, "/queues/mail")
    queues = overview[overview.index('id="queues"') : overview.index('id="workers"')]
    mail_row = queues[queues.index("/queues/mail") : queues.index("/queues/reports")]
    reports_row = queues[queues.index("/queues/reports") :]
    assert "no consumer" not in mail_row
    assert '<td class="num">1</td>' in mail_row
    assert 'class="badge bad">no consumer<' in reports_row
    alerts = unescape(overview[overview.index('id="alerts"') : overview.index('id="queues"')])
    assert "queue 'reports' has 3 ready messages and no consumer" in alerts
    assert "mail" not in alerts
    assert re.search(
        r"<dt>Consumers \(live workers\)</dt><dd><span class=\"no-consumer\">0", reports
    )
    assert "<dt>Consumers (live workers)</dt><dd>1</dd>" in mail


async def test_overview_lists_workers_and_alerts_on_lost_ones_and_groups_over_the_lag_limit(
    app: App,
) -> None:
    results = (await app.abroker()).results()
    now = time.time()
    await results.heartbeat(WorkerInfo("gone-1", "host-b", 2, ("mail",), now - 600, now))
    await app.acreate_topic("orders", partitions=2)
    for number in range(6):
        await app.aproduce("orders", {"n": number}, partition=number % 2)
    for group in ("billing", "audit"):
        member = await (await app.abroker()).join_group(group, ["orders"])
        done = {
            TopicPartition("orders", 0): 3,
            TopicPartition("orders", 1): 3 if group == "audit" else 0,
        }
        await (await app.abroker()).commit_offsets(
            OffsetCommit(group, done, member.member_id, member.generation)
        )
    # The store stamps heartbeats with its own clock: gone-1's must be older than
    # worker_lost_after, and here-1's younger however slowly the console starts.
    await asyncio.sleep(max(0.0, now + LOST_AFTER_S + 0.5 - time.time()))
    await results.heartbeat(WorkerInfo("here-1", "host-a", 1, ("mail",), now - 60, now, 1, 7))
    async with console(
        app, alerts=AlertThresholds(consumer_lag=2), worker_lost_after=LOST_AFTER_S
    ) as client:
        await logged_in(client)
        overview = await page(client, "/")
    alerts = unescape(overview[overview.index('id="alerts"') : overview.index('id="queues"')])
    assert "worker 'gone-1' on host-b is lost" in alerts
    assert "here-1" not in alerts
    assert "consumer group 'billing' lags 3 records (> 2)" in alerts
    assert "'audit'" not in alerts
    workers = overview[overview.index('id="workers"') : overview.index('id="groups"')]
    rows = dict(re.findall(r"<tr><td><code>([\w-]+)</code>(.*?)</tr>", workers))
    assert 'class="badge bad">lost<' in rows["gone-1"]
    assert 'class="badge ok">alive<' in rows["here-1"]
    groups = overview[overview.index('id="groups"') : overview.index('id="charts"')]
    billing = groups[groups.index("group-billing") :]
    audit = groups[groups.index("group-audit") : groups.index("group-billing")]
    assert '<span class="over-threshold">3 <span class="badge warn">over threshold' in billing
    assert "over threshold" not in audit


async def test_the_dead_letter_page_shows_each_stream_dead_letter_topic_and_its_failures(
    app: App,
) -> None:
    await app.acreate_topic("payments", 1)

    @app.subscriber("payments", group="ledger", max_retries=0)
    async def book(record: Record) -> None:
        if record.json()["amount"] < 0:
            raise PermanentError("negative amount <b>refused</b>")

    for amount in (5, -1, 7, -2):
        await app.aproduce("payments", {"amount": amount}, key=f"p{amount}")
    broker = await app.abroker()
    worker = Worker(app, concurrency=1)
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(10):
            while (await broker.committed_offsets("ledger")).get(
                TopicPartition("payments", 0)
            ) != 4:
                await asyncio.sleep(0.02)
    finally:
        worker.stop()
        await task
    await app.acreate_topic("refunds.dlq", 1)
    hand_written = {"x-attempts": "many", "x-failed-at": "yesterday", "x-original-topic": "refunds"}
    await broker.produce("refunds.dlq", [ProducerRecord(b"{}", b"r1", hand_written)])
    async with console(app) as client:
        await logged_in(client)
        text = await page(client, "/dead-letters")
    section = text[text.index('id="dlq-topic-payments.dlq"') :]
    assert "The newest 2 of 2, newest first." in section
    assert section.count("<td>PermanentError</td>") == 2
    assert "negative amount &lt;b&gt;refused&lt;/b&gt;" in section
    assert "payments[0] @ 3" in section
    assert "payments[0] @ 1" in section
    assert "ledger" in section
    summary = text[text.index('id="topics"') : text.index('id="dlq-topic-payments.dlq"')]
    assert '<a href="#dlq-topic-payments.dlq">payments.dlq</a>' in summary
    odd = text[text.index('id="dlq-topic-refunds.dlq"') :]
    assert "The newest 1 of 1" in odd
    assert "refunds" in odd


async def test_charts_keep_their_history_when_the_server_and_app_restart(
    app: App, sqlite_url: str
) -> None:
    register(app)
    settings = ServerSettings(token=None, cache_seconds=0.0, sample_interval=0.01)
    first = create_server(app, settings).state.console.history
    await app.ensure_queue(await app.abroker(), "mail")
    await first.sample()
    await app.get_task("mail.send").asend_many([([f"{n}@x"], {}) for n in range(4)])
    await asyncio.sleep(0.02)
    await first.sample()
    await app.aclose()

    again = App(sqlite_url)
    try:
        server = create_server(again, ServerSettings(token=None, sample_interval=3600))
        history = server.state.console.history
        series = await history.series(["mail"])
        assert series is not None
        assert [value for _, value in series["mail"].depth] == [0.0, 4.0]
        assert len(series["mail"].published) == 1
        transport = httpx.ASGITransport(app=server)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            text = await page(client, "/queues/mail")
        assert '<polyline class="line depth"' in text
        assert '<circle class="dot published"' in text
    finally:
        await again.aclose()
