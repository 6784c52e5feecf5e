"""The operator commands for dead letters, jobs and workers, and the bench and demo wrappers."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.app import App
from conveyor.brokers.types import QueueSpec, WorkerInfo
from conveyor.cli import tools
from conveyor.server import ServerSettings, create_server
from conveyor.worker.consume import Worker
from tests.integration.cli_support import Cli, conveyor

APP = f"{__name__}:app"  # `conveyor --app tests.integration.test_cli_jobs:app`


@pytest.fixture
def cli(
    sqlite_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Cli:
    return Cli(sqlite_url, capsys, monkeypatch)


def make_app(url: str) -> App:
    made = App(url, lease_timeout=7.0)

    @made.task(name="explode", max_retries=0)
    def explode(order: int) -> None:
        raise ValueError(f"order {order} is broken")

    @made.task(name="double")
    def double(n: int) -> int:
        return 2 * n

    return made


app = make_app("memory://")  # each test that uses it gets its own, on the test's database


@pytest.fixture
def task_app(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> App:
    made = make_app(sqlite_url)
    monkeypatch.setattr(sys.modules[__name__], "app", made)
    return made


@pytest.fixture
def jobs(task_app: App) -> dict[str, list[str]]:
    """Three dead jobs and one that succeeded, run by a real worker; their ids."""
    app = task_app

    async def run() -> dict[str, list[str]]:
        dead = [await app.asend_task("explode", [i]) for i in range(3)]
        good = await app.asend_task("double", [21])
        await Worker(app).run_until_idle()
        await app.aclose()
        return {"dead": [job.id for job in dead], "good": [good.id]}

    return asyncio.run(run())


def test_dlq_list_and_show_with_the_app_or_the_broker_url(
    cli: Cli, jobs: dict[str, list[str]]
) -> None:
    listing = cli("dlq", "list")  # no --app: the default queue, with the stored lease timeout
    table = listing.table()
    assert table[0] == ["JOB", "ID", "TASK", "REASON", "ATTEMPTS", "FAILED", "AT", "ERROR"]
    assert [row[0] for row in table[1:]] == jobs["dead"]
    assert table[1][1:4] == ["explode", "retries_exhausted", "1"]
    assert listing.out.splitlines()[1].endswith("  ValueError: order 0 is broken")
    listed = cli("dlq", "list", "--app", APP, "--json").json()["items"]
    assert [d["job_id"] for d in listed] == jobs["dead"]
    assert listed[1]["arguments"] == {"order": 1}
    assert listed[1]["error_type"] == "ValueError"
    assert listed[1]["error_message"] == "order 1 is broken"
    assert [
        d["job_id"]
        for d in cli("dlq", "list", "--limit", "1", "--offset", "2", "--json").json()["items"]
    ] == [jobs["dead"][2]]

    shown = cli("dlq", "show", jobs["dead"][0])
    assert "error:         ValueError: order 0 is broken" in shown.out
    assert 'raise ValueError(f"order {order} is broken")' in shown.out
    data = cli("dlq", "show", jobs["dead"][0], "--queue", "default", "--json").json()
    assert (data["job_id"], data["attempts"], data["queue"]) == (jobs["dead"][0], 1, "default")
    cli("dlq", "show", "nope").one_line_error(1, "no dead job 'nope'")
    cli("dlq", "list", "nope").one_line_error(1, "queue 'nope' does not exist")


def test_dlq_replay_and_purge(cli: Cli, jobs: dict[str, list[str]]) -> None:
    first, second, third = jobs["dead"]
    cli("dlq", "replay", "--id", first, "--id", "missing").one_line_error(
        1, "not waiting in 'default.dlq': missing; nothing was replayed"
    )
    assert cli.broker(lambda b: b.queue_stats("default.dlq")).ready == 3

    result = cli("dlq", "replay", "--id", first)
    assert result.out == "replayed 1 dead job from 'default.dlq' to 'default'\n"
    assert cli.broker(lambda b: b.results().get_job(first)).status.value == "queued"
    assert cli.broker(lambda b: b.queue_stats("default")).ready == 1
    moved = cli("dlq", "replay", "default", "--to", "retry", "--app", APP, "--json")
    assert moved.json() == {"queue": "default", "to": "retry", "replayed": 2}
    assert cli.broker(lambda b: b.queue_stats("retry")).ready == 2

    async def kill_again(broker):
        await broker.move_messages("retry", "default.dlq", message_ids=[second])

    cli.broker(kill_again)
    assert cli("dlq", "purge").out == "purged 1 dead job from 'default.dlq'\n"
    assert cli("dlq", "purge", "--json").json() == {"queue": "default", "purged": 0}
    assert cli.broker(lambda b: b.queue_stats("default.dlq")).depth == 0
    assert third  # still queued on 'retry'


def test_dlq_commands_work_on_task_queues_only(cli: Cli) -> None:
    cli.broker(lambda b: b.declare_queue(QueueSpec("plain")))
    cli("dlq", "list", "plain").one_line_error(1, "'plain' is not a task queue")
    cli("dlq", "purge", "plain").one_line_error(1, "'plain' is not a task queue")
    assert [q.name for q in cli.broker(lambda b: b.list_queues())] == ["plain"]


def test_jobs_list_filters_by_status_task_and_time_and_pages(
    cli: Cli, jobs: dict[str, list[str]]
) -> None:
    table = cli("jobs", "list").table()
    assert table[0] == ["JOB", "ID", "TASK", "QUEUE", "STATUS", "ATTEMPTS", "UPDATED", "ERROR"]
    assert {row[0] for row in table[1:]} == {*jobs["dead"], *jobs["good"]}
    dead = cli("jobs", "list", "--status", "dead", "--json").json()
    assert dead["total"] == 3
    assert {item["id"] for item in dead["items"]} == set(jobs["dead"])
    assert dead["items"][0]["error"]["type"] == "ValueError"
    assert cli("jobs", "list", "--task", "double", "--json").json()["total"] == 1
    assert cli("jobs", "list", "--since", "1h", "--json").json()["total"] == 4
    assert cli("jobs", "list", "--since", "2999-01-01", "--json").json()["total"] == 0
    paged = cli("jobs", "list", "--limit", "2")
    assert len(paged.table()) == 3
    assert "2 of 4 shown; --offset 2 for more" in paged.err
    assert cli("jobs", "list", "--status", "lost").code == 2


def test_jobs_show_and_cancel(cli: Cli, jobs: dict[str, list[str]], task_app: App) -> None:
    (good,) = jobs["good"]
    shown = cli("jobs", "show", good)
    assert shown.code == 0
    assert "status:          succeeded" in shown.out
    assert "result:          42" in shown.out
    dead = cli("jobs", "show", jobs["dead"][0], "--json").json()
    assert (dead["status"], dead["attempts"], dead["task"]) == ("dead", 1, "explode")
    assert dead["error"]["type"] == "ValueError"
    assert "Traceback" in cli("jobs", "show", jobs["dead"][0]).out
    cli("jobs", "show", "nope").one_line_error(1, "no job 'nope'")
    cli("jobs", "cancel", good).one_line_error(1, "is succeeded: too late to cancel")

    async def queue_one() -> str:
        job = await task_app.asend_task("double", [1])
        await task_app.aclose()
        return job.id

    waiting = asyncio.run(queue_one())
    assert cli("jobs", "cancel", waiting).out == f"cancelled job '{waiting}'\n"
    assert cli.broker(lambda b: b.results().get_job(waiting)).status.value == "cancelled"


def test_workers_shows_heartbeats_and_lost_ones(cli: Cli, tmp_path: Path) -> None:

    async def beat(broker):
        counts = {"running": 2, "processed": 40, "failed": 1, "concurrency": 8}
        await broker.results().heartbeat(
            WorkerInfo("w-1", "host-a", 11, ("default", "mail"), 0, 0, **counts)
        )
        await broker.results().heartbeat(WorkerInfo("w-2", "host-b", 22, ("default",), 0, 0))

    cli.broker(beat)
    with sqlite3.connect(tmp_path / "conveyor.db") as db:  # w-2 went silent 100 s ago
        db.execute("UPDATE workers SET heartbeat_at_ms = heartbeat_at_ms - 100000 WHERE id = 'w-2'")
    db.close()
    table = cli("workers").table()
    assert table[0] == ["ID", "HOST", "PID", "QUEUES", "CONCURRENCY", "RUNNING", "PROCESSED",
                        "FAILED", "HEARTBEAT", "LOST"]  # fmt: skip
    rows = {row[0]: row for row in table[1:]}
    assert rows["w-1"][1:8] == ["host-a", "11", "default,mail", "8", "2", "40", "1"]
    assert rows["w-1"][-1] == "no"
    assert rows["w-2"][-1] == "yes"
    data = {w["id"]: w for w in cli("workers", "--json").json()["items"]}
    assert data["w-1"]["queues"] == ["default", "mail"]
    assert data["w-2"]["lost"] is True
    cli.broker(lambda b: b.declare_queue(QueueSpec("default")))
    queues = {q["name"]: q for q in cli("queues", "list", "--json").json()}
    assert queues["default"]["workers"] == 1  # only the live one counts


def test_json_listings_print_what_the_http_api_answers(
    cli: Cli, jobs: dict[str, list[str]], sqlite_url: str
) -> None:
    cli.broker(lambda b: b.results().heartbeat(WorkerInfo("w-9", "host-c", 9, ("default",), 0, 0)))
    asked = {
        "/api/queues/default/dead-letters?limit=2&offset=1": ["dlq", "list", "--limit", "2",
                                                             "--offset", "1"],
        f"/api/queues/default/dead-letters/{jobs['dead'][1]}": ["dlq", "show", jobs["dead"][1]],
        "/api/jobs?status=dead&limit=2": ["jobs", "list", "--status", "dead", "--limit", "2"],
        "/api/workers?limit=5&offset=0": ["workers", "--limit", "5"],
    }  # fmt: skip

    async def answers() -> dict[str, Any]:
        served = App(sqlite_url)
        server = create_server(served, ServerSettings(token=None, cache_seconds=0.0))
        transport = httpx.ASGITransport(app=server)
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://localhost"
            ) as client:
                return {path: (await client.get(path)).json() for path in asked}
        finally:
            await served.aclose()

    api = asyncio.run(answers())
    for path, command in asked.items():
        assert cli(*command, "--json").json() == api[path], path
    assert api["/api/queues/default/dead-letters?limit=2&offset=1"]["total"] == 3
    refused = cli("workers", "--offset", "-1")
    assert refused.code == 2
    assert "'-1' is not a whole number (0 or more)" in refused.err


def test_bench_outside_a_source_checkout_is_one_line(tmp_path: Path) -> None:
    result = conveyor("bench", "queues", "--quick", cwd=tmp_path)
    result.one_line_error(1, "the bench package is not importable")


def test_bench_and_demo_pass_their_arguments_on(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []

    def run(command: list[str]) -> int:
        ran.append(command)
        return 3

    monkeypatch.setattr(tools, "_run", run)
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    assert cli("bench", "streams", "--quick", "--json", "out.json", "--repeat", "2").code == 3
    assert cli("demo", "--once", "--emails", "50").code == 3
    assert cli("demo", "--help").code == 3  # the demo's own help
    assert ran == [
        [
            sys.executable,
            "-m",
            "bench",
            "streams",
            "--quick",
            "--json",
            "out.json",
            "--repeat",
            "2",
        ],
        [sys.executable, "-m", "conveyor.demo", "--once", "--emails", "50"],
        [sys.executable, "-m", "conveyor.demo", "--help"],
    ]


def test_every_command_has_help(cli: Cli) -> None:
    result = cli("--help")
    assert result.code == 0
    commands = "worker queues exchanges bind unbind topics groups publish produce consume dlq"
    for command in [*commands.split(), "jobs", "workers", "bench", "demo"]:
        assert command in result.out
    assert "--broker URL" in cli("groups", "reset-offsets", "--help").out
