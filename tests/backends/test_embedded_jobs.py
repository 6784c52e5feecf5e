"""The embedded store's job records: an unkeyed job is its message row until it settles.

These tests look into the file itself (how many rows ``jobs`` holds) because what they
prove is the layout: a submission writes one row, and every way a job can be read, listed,
changed or lose its message still finds it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor import QueueSpec
from conveyor.app import App
from conveyor.brokers.types import JobQuery, JobStatus
from conveyor.errors import JobNotFound
from conveyor.tasks.context import job_context
from conveyor.worker.consume import Worker


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "conveyor.db"


@pytest.fixture
async def app(database: Path) -> AsyncIterator[App]:
    instance = App(f"sqlite:///{database}", lease_timeout=5.0)
    yield instance
    await instance.aclose()


def _job_rows(database: Path) -> int:
    with sqlite3.connect(database) as raw:
        (count,) = raw.execute("SELECT count(*) FROM jobs").fetchone()
    raw.close()
    return int(count)


async def test_an_unkeyed_job_is_read_listed_and_counted_from_its_message_row(
    app: App, database: Path
) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    now, later = await add.adelay(1, 2), await add.asend((3, 4), delay=60, queue="later")
    assert _job_rows(database) == 0

    assert (await app.ajob(now.id)).status is JobStatus.QUEUED
    scheduled = await app.ajob(later.id)
    assert scheduled.status is JobStatus.SCHEDULED
    assert scheduled.next_attempt_at is not None
    assert scheduled.record.task == add.name
    results = await app.aresults()
    listed = await results.list_jobs(JobQuery())
    assert {job.id for job in listed.items} == {now.id, later.id}
    assert listed.total == 2
    assert [
        job.id for job in (await results.list_jobs(JobQuery(status=JobStatus.SCHEDULED))).items
    ] == [later.id]
    assert (await results.list_jobs(JobQuery(status=JobStatus.SUCCEEDED))).total == 0
    (stats,) = await results.job_stats()
    assert stats.statuses == {JobStatus.QUEUED: 1, JobStatus.SCHEDULED: 1}

    await Worker(app, queues=["default"]).run_until_idle()
    assert await now.aresult(timeout=5) == 3
    assert _job_rows(database) == 1  # the settled one; the delayed one is still its message
    assert (await app.ajob(later.id)).status is JobStatus.SCHEDULED


async def test_a_running_job_without_a_row_reports_running_and_progress(app: App) -> None:
    seen: list[tuple[JobStatus, object]] = []

    @app.task
    async def report() -> None:
        own = await app.ajob(job_context().job_id)
        await job_context().aset_progress({"done": 1})
        seen.append((own.status, (await app.ajob(job_context().job_id)).progress))

    job = await report.adelay()
    await Worker(app).run_until_idle()
    assert seen == [(JobStatus.RUNNING, {"done": 1})]
    assert (await app.ajob(job.id)).status is JobStatus.SUCCEEDED


async def test_a_job_without_a_row_is_cancelled_and_stays_found(app: App, database: Path) -> None:
    @app.task
    def never() -> None:
        raise AssertionError("a cancelled job ran")

    job = await never.asend(delay=60)
    assert await job.acancel()
    assert job.status is JobStatus.CANCELLED
    assert _job_rows(database) == 1
    await Worker(app).run_until_idle()


async def test_a_pending_job_moved_to_another_queue_is_found_and_runs_there(app: App) -> None:
    @app.task(queue="first")
    def work() -> str:
        return "ran"

    job = await work.adelay()
    broker = await app.abroker()
    await app.ensure_queue(broker, "second")
    assert await broker.move_messages("first", "second") == 1
    moved = await app.ajob(job.id)
    assert moved.status is JobStatus.QUEUED
    await Worker(app, queues=["second"]).run_until_idle()
    assert await job.aresult(timeout=5) == "ran"


async def test_a_pending_job_whose_message_expires_is_recorded_dead(app: App) -> None:
    @app.task
    def late() -> None:
        raise AssertionError("an expired job ran")

    broker = await app.abroker()
    await broker.declare_queue(QueueSpec("short.dlq"))
    await broker.declare_queue(
        QueueSpec(
            "short", message_ttl=0.1, dead_letter_exchange="", dead_letter_routing_key="short.dlq"
        )
    )
    (record,) = await broker.submit_jobs([late.submission(queue="short")])
    await asyncio.sleep(0.3)
    assert await broker.receive("short", wait=0) == []
    assert (await app.ajob(record.id)).status is JobStatus.DEAD
    assert len(await broker.browse("short.dlq")) == 1


async def test_an_id_that_names_no_job_is_not_found_whatever_it_ends_with(app: App) -> None:
    @app.task
    def work() -> None: ...

    job = await work.adelay()
    other_time = job.id[:13] + ("1" if job.id[13] == "0" else "0") + job.id[14:]
    for wrong in (other_time, "0" * 26, "not-a-job", ""):
        with pytest.raises(JobNotFound):
            await app.ajob(wrong)


async def test_jobs_submitted_before_schema_6_settle_into_their_own_rows(
    app: App, database: Path
) -> None:
    """A file migrated from schema 5 holds pending jobs whose rows were written at submit
    and whose messages carry no task name: settling them updates those rows."""

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    job = await add.adelay(2, 2)
    with sqlite3.connect(database) as raw:  # as schema 5 stored it
        raw.execute(
            "INSERT INTO jobs (id, task, queue, status, created_at_ms, updated_at_ms,"
            " message_rowid, result_ttl_ms) SELECT message_id, job_task, 'default', 'queued',"
            " enqueued_at_ms, enqueued_at_ms, id, job_result_ttl_ms FROM messages"
        )
        raw.execute("UPDATE messages SET job_task = NULL, job_result_ttl_ms = NULL")
    raw.close()
    await Worker(app).run_until_idle()
    assert await job.aresult(timeout=5) == 4
    assert _job_rows(database) == 1
