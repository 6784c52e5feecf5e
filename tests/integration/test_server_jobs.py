"""The HTTP API for tasks, jobs and workers, against a real embedded broker."""

from __future__ import annotations

import asyncio
import time

from conveyor.app import App
from conveyor.brokers.types import JobStatus, WorkerInfo
from conveyor.codecs import loads
from conveyor.errors import PermanentError
from conveyor.tasks.context import job_context
from conveyor.worker.consume import Worker
from tests.integration.server_support import error_of, serve


def register(app: App) -> None:
    @app.task(name="mail.send")
    def send(to: str, retries: int = 0) -> str:
        job_context().set_progress({"step": "sent"})
        return f"sent to {to}"

    @app.task(name="mail.bounce", max_retries=0)
    def bounce(to: str) -> None:
        raise PermanentError(f"{to} does not exist")


async def test_enqueue_by_name_answers_202_and_queues_the_job(app: App) -> None:
    register(app)
    async with serve(app) as client:
        response = await client.post("/api/jobs", json={"task": "mail.send", "args": ["ada@x"]})
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/api/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["task"] == "mail.send"
    assert job["queue"] == "default"
    broker = await app.abroker()
    assert (await broker.results().get_job(job["id"])).status is JobStatus.QUEUED
    (waiting,) = await broker.browse("default")
    assert waiting.message.id == job["id"]
    assert loads(waiting.message.body) == {"to": "ada@x", "retries": 0}


async def test_enqueue_options_are_applied(app: App) -> None:
    register(app)
    async with serve(app) as client:
        later = await client.post(
            "/api/jobs",
            json={"task": "mail.send", "kwargs": {"to": "a@x"}, "delay": 60, "queue": "slow"},
        )
        urgent = await client.post(
            "/api/jobs", json={"task": "mail.send", "args": ["b@x"], "priority": 7}
        )
        keyed = [
            await client.post(
                "/api/jobs",
                json={"task": "mail.send", "args": ["c@x"], "idempotency_key": "welcome:c"},
            )
            for _ in range(2)
        ]
    assert later.json()["status"] == "scheduled"
    assert later.json()["queue"] == "slow"
    assert later.json()["scheduled_for"] > time.time() + 50
    broker = await app.abroker()
    (urgent_message, _) = await broker.browse("default")
    assert urgent_message.message.id == urgent.json()["id"]
    assert urgent_message.message.priority == 7
    assert keyed[0].json()["id"] == keyed[1].json()["id"]
    assert (await broker.queue_stats("default")).ready == 2


async def test_unknown_task_is_404_listing_the_registered_names(app: App) -> None:
    register(app)
    async with serve(app) as client:
        response = await client.post("/api/jobs", json={"task": "mail.sned"})
    error = error_of(response, 404)
    assert error["type"] == "TaskNotFound"
    assert "mail.bounce, mail.send" in error["message"]
    assert error["registered"] == ["mail.bounce", "mail.send"]


async def test_bad_arguments_are_422_naming_the_field_and_nothing_is_sent(app: App) -> None:
    register(app)
    async with serve(app) as client:
        wrong_type = await client.post(
            "/api/jobs", json={"task": "mail.send", "kwargs": {"to": "a@x", "retries": "two"}}
        )
        unknown = await client.post("/api/jobs", json={"task": "mail.send", "kwargs": {"x": 1}})
    error = error_of(wrong_type, 422)
    assert error["type"] == "ValidationError"
    assert error["field"] == "retries"
    assert error_of(unknown, 422)["type"] == "ValidationError"
    assert await (await app.abroker()).list_queues() == []


async def test_malformed_requests_are_422_with_the_field(app: App) -> None:
    register(app)
    async with serve(app) as client:
        negative = await client.post("/api/jobs", json={"task": "mail.send", "delay": -1})
        extra = await client.post("/api/jobs", json={"task": "mail.send", "when": "now"})
        not_a_list = await client.post("/api/jobs", json={"task": "mail.send", "args": "a@x"})
        not_json = await client.post(
            "/api/jobs", content=b"{oops", headers={"content-type": "application/json"}
        )
    assert error_of(negative, 422)["field"] == "delay"
    assert error_of(extra, 422)["field"] == "when"
    assert error_of(not_a_list, 422)["field"] == "args"
    error = error_of(not_json, 422)
    assert (error["type"], error["field"]) == ("InvalidRequest", "body")
    assert error["message"].startswith("body: not valid JSON: ")


async def test_jobs_are_listed_by_status_task_and_time_with_pages(app: App) -> None:
    register(app)
    async with serve(app) as client:
        for address in ("a@x", "b@x"):
            await client.post("/api/jobs", json={"task": "mail.send", "args": [address]})
        await client.post("/api/jobs", json={"task": "mail.bounce", "args": ["c@x"]})
        await Worker(app).run_until_idle()
        everything = (await client.get("/api/jobs")).json()
        dead = (await client.get("/api/jobs", params={"status": "dead"})).json()
        sent = (await client.get("/api/jobs", params={"task": "mail.send", "limit": 1})).json()
        later = (await client.get("/api/jobs", params={"since": time.time() + 60})).json()
        wrong = await client.get("/api/jobs", params={"status": "lost"})
    assert everything["total"] == 3
    assert {item["status"] for item in everything["items"]} == {"succeeded", "dead"}
    assert [item["task"] for item in dead["items"]] == ["mail.bounce"]
    assert (sent["total"], len(sent["items"]), sent["limit"]) == (2, 1, 1)
    assert later["total"] == 0
    assert error_of(wrong, 422)["field"] == "status"


async def test_a_job_shows_status_result_attempts_progress_and_error(app: App) -> None:
    register(app)
    async with serve(app) as client:
        sent = await client.post("/api/jobs", json={"task": "mail.send", "args": ["a@x"]})
        bounced = await client.post("/api/jobs", json={"task": "mail.bounce", "args": ["b@x"]})
        await Worker(app).run_until_idle()
        done = (await client.get(f"/api/jobs/{sent.json()['id']}")).json()
        dead = (await client.get(f"/api/jobs/{bounced.json()['id']}")).json()
    assert done["status"] == "succeeded"
    assert done["finished"] is True
    assert done["result"] == "sent to a@x"
    assert done["attempts"] == 1
    assert done["progress"] == {"step": "sent"}
    assert done["first_attempt_at"] <= done["last_attempt_at"] <= done["updated_at"]
    assert dead["status"] == "dead"
    assert dead["error"]["type"] == "conveyor.errors.PermanentError"
    assert dead["error"]["message"] == "b@x does not exist"


async def test_unknown_job_is_404(app: App) -> None:
    async with serve(app) as client:
        error = error_of(await client.get("/api/jobs/nope"), 404)
    assert error["type"] == "JobNotFound"
    assert "nope" in error["message"]


async def test_cancel_stops_a_job_that_has_not_started(app: App) -> None:
    register(app)
    async with serve(app) as client:
        job = (await client.post("/api/jobs", json={"task": "mail.send", "args": ["a"]})).json()
        cancelled = await client.post(f"/api/jobs/{job['id']}/cancel")
        again = await client.post(f"/api/jobs/{job['id']}/cancel")
    assert cancelled.json()["cancelled"] is True
    assert cancelled.json()["job"]["status"] == "cancelled"
    assert again.json()["cancelled"] is False
    assert (await (await app.abroker()).queue_stats("default")).depth == 0


async def test_tasks_are_listed_by_page(app: App) -> None:
    register(app)

    @app.periodic(every=60, name="mail.digest")
    def digest() -> None:
        return None

    async with serve(app) as client:
        first = (await client.get("/api/tasks", params={"limit": 2})).json()
        rest = (await client.get("/api/tasks", params={"limit": 2, "offset": 2})).json()
        too_many = await client.get("/api/tasks", params={"limit": 100_000})
    assert [t["name"] for t in first["items"]] == ["mail.bounce", "mail.digest"]
    assert (first["total"], first["limit"], first["offset"]) == (3, 2, 0)
    assert [t["name"] for t in rest["items"]] == ["mail.send"]
    assert first["items"][1]["periodic"] is True
    assert first["items"][0]["max_retries"] == 0
    assert error_of(too_many, 422)["field"] == "limit"


async def test_workers_are_listed_and_lost_ones_marked(app: App) -> None:
    broker = await app.abroker()
    now = time.time()
    for name in ("w-a", "w-b"):
        await broker.results().heartbeat(
            WorkerInfo(name, "host", 1, ("default",), now, now, processed=5)
        )
    async with serve(app, worker_lost_after=60) as client:
        fresh = (await client.get("/api/workers", params={"limit": 1})).json()
    await asyncio.sleep(0.3)
    async with serve(app, worker_lost_after=0.2) as client:
        stale = (await client.get("/api/workers")).json()
    assert fresh["total"] == 2
    (only,) = fresh["items"]
    assert (only["id"], only["processed"], only["lost"]) == ("w-a", 5, False)
    assert [w["lost"] for w in stale["items"]] == [True, True]
