"""The web console's pages through ASGI, on real data: queues, charts, the dead-letter
inspector with its replay and purge forms, topics, groups, workers and jobs, escaping."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest

from conveyor import QueueSpec
from conveyor.app import App
from conveyor.assignors import TopicPartition
from conveyor.brokers.stream_types import OffsetCommit
from conveyor.brokers.types import WorkerInfo
from conveyor.message import Message
from conveyor.server import AlertThresholds, ServerSettings, create_server
from conveyor.server.console import mount_console
from conveyor.worker.consume import Worker
from tests.integration.console_support import (
    SCRIPT,
    console,
    dead_letter,
    logged_in,
    page,
    register,
)


async def test_overview_shows_queues_charts_alerts_and_dead_letters(app: App) -> None:
    register(app)
    await dead_letter(app)
    await app.get_task("mail.send").adelay("bob@example.com")
    alerts = AlertThresholds(dead_letters=0)
    async with console(app, alerts=alerts) as client:
        await logged_in(client)
        text = await page(client, "/")
        refresh = await client.get("/", headers={"X-Console-Panels": "1"})
    assert '<a href="/queues/mail">mail</a>' in text
    assert text.count('<svg class="plot"') == 3  # depth, rate, errors of "mail"
    assert "degraded" in text
    assert "holds 1 dead letters" in text
    assert '<a href="/dead-letters/mail">inspect</a>' in text
    assert refresh.status_code == 200
    panels = refresh.json()["panels"]
    assert set(panels) == {"alerts", "queues", "workers", "groups", "charts", "dead-letters"}
    assert "holds 1 dead letters" in panels["alerts"]


async def test_charts_draw_depth_and_rates_from_the_sampled_history(app: App) -> None:
    register(app)
    settings = ServerSettings(token=None, cache_seconds=0.0, sample_interval=0.001)
    server = create_server(app, settings)
    mount_console(server, app, settings)
    history = server.state.console.history
    await app.ensure_queue(await app.abroker(), "mail")
    await history.sample()
    await app.get_task("mail.send").asend_many([(["a@x"], {}), (["b@x"], {})])
    await asyncio.sleep(0.01)
    await history.sample()
    transport = httpx.ASGITransport(app=server)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        text = await page(client, "/queues/mail")
    assert '<polyline class="line depth"' in text
    assert '<circle class="dot published"' in text  # one rate so far: between the samples
    assert "messages <b>2</b>" in text


async def test_queue_page_browses_messages_a_page_at_a_time(app: App) -> None:
    broker = await app.abroker()
    await broker.declare_queue(QueueSpec("raw"))
    for number in range(30):
        await broker.publish(Message(f"message {number}".encode(), routing_key="raw"))
    async with console(app) as client:
        await logged_in(client)
        first = await page(client, "/queues/raw")
        second = await page(client, "/queues/raw?offset=25")
        missing = await client.get("/queues/absent")
    assert "message 0" in first
    assert "message 24" in first
    assert "message 25" not in first
    assert "1 to 25 of 30" in first
    assert 'href="/queues/raw?limit=25&amp;offset=25"' in first
    assert "message 29" in second
    assert "message 24" not in second
    assert missing.status_code == 404
    assert "absent" in missing.text


async def test_dead_letter_inspector_shows_the_failure(app: App) -> None:
    register(app)
    job_id = await dead_letter(app)
    async with console(app) as client:
        await logged_in(client)
        index = await page(client, "/dead-letters")
        listing = await page(client, "/dead-letters/mail")
        detail = await page(client, f"/dead-letters/mail/{job_id}")
        unknown = await client.get("/dead-letters/mail/no-such-job")
    assert '<a href="/dead-letters/mail">mail</a>' in index
    assert "mail.dlq" in index
    assert job_id in listing
    assert "PermanentError" in listing
    expected = ["mail.bounce", "PermanentError", "bounced", "Traceback", "raise PermanentError",
                '<a href="/queues/mail">mail</a>', "ada@example.com"]  # fmt: skip
    for text in expected:
        assert text in detail, text
    worker = re.search(r"<dt>Worker</dt><dd>([^<]+)</dd>", detail)
    assert worker
    assert worker.group(1) != "—"
    assert re.search(r"<dt>Attempts</dt><dd>1</dd>", detail)
    assert unknown.status_code == 404


async def test_replaying_through_the_form_moves_the_job_back_to_its_queue(app: App) -> None:
    register(app)
    job_id = await dead_letter(app)
    async with console(app) as client:
        csrf = await logged_in(client)
        response = await client.post(
            "/dead-letters/mail/replay", data={"csrf": csrf, "job_id": job_id}
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/dead-letters/mail"
        after = await page(client, "/dead-letters/mail")
    assert "Replayed 1 dead letter(s) to queue &#x27;mail&#x27;." in after
    broker = await app.abroker()
    assert (await broker.queue_stats("mail.dlq")).depth == 0
    (waiting,) = await broker.browse("mail")
    assert waiting.message.id == job_id
    assert (await app.ajob(job_id)).status.value == "queued"


async def test_replay_to_another_queue_needs_that_queue_to_exist(app: App) -> None:
    register(app)
    job_id = await dead_letter(app)
    broker = await app.abroker()
    async with console(app) as client:
        csrf = await logged_in(client)
        typo = {"csrf": csrf, "job_id": job_id, "to_queue": "mial"}
        assert (await client.post("/dead-letters/mail/replay", data=typo)).status_code == 303
        assert "Nothing replayed" in await page(client, "/dead-letters/mail")
        assert (await broker.queue_stats("mail.dlq")).depth == 1
        await app.ensure_queue(broker, "mail-slow")
        moved = {"csrf": csrf, "scope": "all", "to_queue": "mail-slow"}
        assert (await client.post("/dead-letters/mail/replay", data=moved)).status_code == 303
        nothing = {"csrf": csrf}
        assert (await client.post("/dead-letters/mail/replay", data=nothing)).status_code == 303
        assert "Choose the dead letters" in await page(client, "/dead-letters/mail")
    assert (await broker.queue_stats("mail.dlq")).depth == 0
    assert [m.message.id for m in await broker.browse("mail-slow")] == [job_id]


async def test_purging_through_the_form_empties_the_dead_letter_queue(app: App) -> None:
    register(app)
    await dead_letter(app)
    await dead_letter(app)
    async with console(app) as client:
        csrf = await logged_in(client)
        response = await client.post("/dead-letters/mail/purge", data={"csrf": csrf})
        assert response.status_code == 303
        after = await page(client, "/dead-letters/mail")
    assert "Purged 2 dead letter(s)" in after
    assert "No dead letters" in after
    assert (await (await app.abroker()).queue_stats("mail.dlq")).depth == 0


@pytest.mark.parametrize("app", ["sqlite", "redis"], indirect=True)
async def test_topics_show_partition_offsets_and_groups_their_lag(app: App) -> None:
    await app.acreate_topic("orders", partitions=2)
    for number in range(5):
        await app.aproduce("orders", {"n": number}, partition=number % 2)
    broker = await app.abroker()
    member = await broker.join_group("billing", ["orders"])
    commit = {TopicPartition("orders", 0): 1}
    await broker.commit_offsets(
        OffsetCommit("billing", commit, member.member_id, member.generation)
    )
    async with console(app) as client:
        await logged_in(client)
        topics = await page(client, "/topics")
        groups = await page(client, "/groups")
    assert 'id="topic-orders"' in topics
    # partition, start, end, records: partition 0 holds 3 records, partition 1 holds 2
    assert re.search(r'<td class="num">0</td><td class="num">0</td><td class="num">3</td>', topics)
    assert re.search(r'<td class="num">1</td><td class="num">0</td><td class="num">2</td>', topics)
    assert 'id="group-billing"' in groups
    assert "Stable" in groups
    # topic, partition, committed, end, lag, owner
    owner = f"<td>{member.member_id}</td>"
    row0 = '<td>orders</td><td class="num">0</td><td class="num">1</td><td class="num">3</td>'
    assert row0 + '<td class="num">2</td>' + owner in groups
    row1 = '<td>orders</td><td class="num">1</td><td>—</td><td class="num">2</td>'
    assert row1 + '<td class="num">2</td>' + owner in groups
    assert '<td class="num">4</td>' in groups  # the group's total lag


async def test_workers_page_shows_each_worker_and_the_lost_ones(app: App) -> None:
    broker = await app.abroker()
    now = time.time()
    alive = WorkerInfo("host-a-1", "host-a", 1, ("mail",), now - 60, now, 2, 10, 1, 4)
    lost = WorkerInfo("host-b-2", "host-b", 2, ("mail", "slow"), now - 600, now, 0, 5, 3)
    await broker.results().heartbeat(lost)  # stamped by the store's own clock
    await asyncio.sleep(2.5)
    await broker.results().heartbeat(alive)
    async with console(app, worker_lost_after=2.0) as client:  # however slowly it starts
        await logged_in(client)
        text = await page(client, "/workers")
    row_a = text[text.index("host-a-1") : text.index("host-b-2")]
    row_b = text[text.index("host-b-2") :]
    assert "2 of 4" in row_a
    assert 'class="num">10<' in row_a
    assert "alive" in row_a
    assert 'class="badge bad">lost<' in row_b
    assert '<a href="/queues/slow">slow</a>' in row_b


async def test_job_lookup_shows_status_attempts_result_and_error(app: App) -> None:
    register(app)
    sent = await app.get_task("mail.send").adelay("ada@example.com")
    await Worker(app, queues=["mail"], concurrency=1).run_until_idle()
    dead_id = await dead_letter(app)
    async with console(app) as client:
        await logged_in(client)
        form = await page(client, "/jobs")
        done = await page(client, f"/jobs?id={sent.id}")
        dead = await page(client, f"/jobs?id={dead_id}")
        unknown = await page(client, f"/jobs?id={SCRIPT}")
    assert 'name="id"' in form
    assert "succeeded" in done
    assert "&quot;sent&quot;: &quot;ada@example.com&quot;" in done
    assert re.search(r"<dt>Attempts</dt><dd>1</dd>", done)
    assert "dead" in dead
    assert "PermanentError" in dead
    assert "No job with id" in unknown
    assert SCRIPT not in unknown


async def test_the_jobs_page_lists_recent_jobs_filtered_by_status_and_task(app: App) -> None:
    register(app)
    sent = [await app.get_task("mail.send").adelay(f"user{n}@example.com") for n in range(3)]
    await Worker(app, queues=["mail"], concurrency=1).run_until_idle()
    dead_id = await dead_letter(app)
    async with console(app) as client:
        await logged_in(client)
        everything = await page(client, "/jobs")
        dead = await page(client, "/jobs?status=dead")
        by_task = await page(client, "/jobs?task=mail.send")
        nonsense = await page(client, f"/jobs?status={SCRIPT}&task={SCRIPT}&offset=x")
    for job in sent:
        assert f'href="/jobs?id={job.id}"' in everything
        assert job.id not in dead
        assert job.id in by_task
    assert dead_id in everything
    assert dead_id in dead
    assert dead_id not in by_task
    assert '<option value="dead" selected>' in dead
    assert "No kept job matches." in nonsense
    assert SCRIPT not in nonsense


async def test_user_controlled_text_is_escaped_everywhere(app: App) -> None:
    register(app)
    job_id = await dead_letter(app)
    broker = await app.abroker()
    await broker.declare_queue(QueueSpec("raw"))
    await broker.publish(
        Message(SCRIPT.encode(), routing_key="raw", headers={"n": SCRIPT}, content_type="text/html")
    )
    async with console(app) as client:
        await logged_in(client)
        texts = [
            await page(client, "/queues/raw"),
            await page(client, "/dead-letters/mail"),
            await page(client, f"/dead-letters/mail/{job_id}"),
            await page(client, f"/jobs?id={job_id}"),
        ]
        refresh = await client.get("/queues/raw", headers={"X-Console-Panels": "1"})
    for text in texts:
        assert "<script>alert" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script>alert" not in refresh.json()["panels"]["messages"]


async def test_live_panels_leave_the_forms_alone(app: App) -> None:
    register(app)
    job_id = await dead_letter(app)
    async with console(app) as client:
        await logged_in(client)
        listing = await client.get("/dead-letters/mail", headers={"X-Console-Panels": "1"})
        detail = await client.get(f"/dead-letters/mail/{job_id}", headers={"X-Console-Panels": "1"})
        lookup = await client.get(f"/jobs?id={job_id}", headers={"X-Console-Panels": "1"})
    assert set(listing.json()["panels"]) == {"dead-letters"}
    assert "to_queue" not in listing.json()["panels"]["dead-letters"]
    assert detail.json()["panels"] == {}
    assert set(lookup.json()["panels"]) == {"job", "jobs"}
    assert "<form" not in lookup.json()["panels"]["jobs"]
