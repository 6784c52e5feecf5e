"""The operator's tools on the broker servers: the CLI, a ``conveyor worker`` process, the
HTTP API and the console, against RabbitMQ (a virtual host per test, job records in Redis)
and Redis (a key prefix per test, job records in the broker's own store).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor import __version__
from conveyor.app import App
from conveyor.brokers import Capability, open_broker
from conveyor.errors import JobFailed
from conveyor.tasks.states import dead_letter_queue
from tests.backend_urls import BACKENDS
from tests.backends import server_app
from tests.integration.cli_support import Cli
from tests.integration.console_support import console, logged_in
from tests.integration.server_support import serve

ROOT = Path(__file__).resolve().parents[2]
PASSWORD_IN_URL = ":guest@"
"""What a URL shows when its password (guest) is not masked."""


@pytest.fixture(params=["rabbitmq", "redis"])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh virtual host of the local RabbitMQ, or a fresh key prefix on the local Redis
    (skips, or fails on CI, without the server)."""
    return BACKENDS[request.param](tmp_path)


@pytest.fixture
def results_url(broker_url: str, request: pytest.FixtureRequest) -> str | None:
    """Redis for RabbitMQ's job records; None for a broker that keeps its own."""
    if Capability.RESULTS in open_broker(broker_url).capabilities:
        return None
    url: str = request.getfixturevalue("redis_results_url")
    return url


@pytest.fixture
def cli(
    broker_url: str,
    results_url: str | None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Cli:
    if results_url is not None:
        monkeypatch.setenv("CONVEYOR_RESULTS_URL", results_url)
    return Cli(broker_url, capsys, monkeypatch)


@pytest.fixture
async def app(broker_url: str, results_url: str | None) -> AsyncIterator[App]:
    instance = server_app.build(broker_url, results_url)
    yield instance
    await instance.aclose()
    instance.close()


@pytest.fixture
def worker(
    app: App, broker_url: str, results_url: str | None, tmp_path: Path
) -> Iterator[subprocess.Popen[str]]:
    """``conveyor worker tests.backends.server_app:app`` in a process group of its own,
    killed with its group however the test ends."""
    env = {
        **os.environ,
        server_app.BROKER_URL_ENV: broker_url,
        server_app.RESULTS_URL_ENV: results_url or "",
        server_app.DIRECTORY_ENV: str(tmp_path),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker", "tests.backends.server_app:app",
         "--concurrency", "2", "--log-format", "json", "--loglevel", "DEBUG"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)


def test_queue_exchange_and_message_commands_work_on_the_server(cli: Cli) -> None:
    assert cli("queues", "declare", "orders", "--max-priority", "5").code == 0
    assert cli("exchanges", "declare", "events", "--type", "topic").code == 0
    assert cli("bind", "events", "orders", "--routing-key", "order.*").code == 0
    sent = cli("publish", "events", "--exchange", "--routing-key", "order.paid", stdin="a\nb\n")
    assert sent.code == 0, sent.err
    assert cli("publish", "orders", "--priority", "3", stdin="c\n").code == 0

    rows = {row["name"]: row for row in cli("queues", "list", "--json").json()}
    assert rows["orders"]["ready"] == 3
    assert rows["orders"]["options"]["max_priority"] == 5
    assert [row[0] for row in cli("exchanges", "list").table()] == ["NAME", "(default)", "events"]
    shown = cli("exchanges", "show", "events", "--json").json()
    assert [binding["routing_key"] for binding in shown["bindings"]] == ["order.*"]

    taken = cli("consume", "orders", "--max-messages", "3", "--timeout", "5s").lines()
    assert [line["body"] for line in taken] == ["c", "a", "b"]
    assert cli("queues", "list", "--json").json()[0]["ready"] == 0
    assert cli("publish", "orders", stdin="d\n").code == 0
    assert cli("queues", "purge", "orders").code == 0
    assert cli("queues", "delete", "orders").code == 0
    assert "orders" not in {row["name"] for row in cli("queues", "list", "--json").json()}


def test_a_missing_queue_on_the_server_is_one_line_without_the_password(cli: Cli) -> None:
    result = cli("queues", "show", "nowhere")
    result.one_line_error(1, "'nowhere'")
    assert PASSWORD_IN_URL not in result.err


async def test_a_worker_process_runs_retries_and_dead_letters_tasks_on_the_server(
    app: App, worker: subprocess.Popen[str], cli: Cli, tmp_path: Path, broker_url: str
) -> None:
    added = await app.get_task("ops.add").adelay(2, 3)
    flaky = await app.get_task("ops.flaky").adelay("flaky")
    poison = await app.get_task("ops.poison").adelay("poison")

    assert await added.aresult(timeout=30) == 5
    assert await flaky.aresult(timeout=30) == 2
    with pytest.raises(JobFailed):
        await poison.aresult(timeout=30)
    assert (await app.ajob(poison.id)).status.value == "dead"
    assert (tmp_path / "poison").read_text() == "xx"

    (dead,) = (await asyncio.to_thread(cli, "dlq", "list", "ops", "--json")).json()["items"]
    assert (dead["job_id"], dead["task"], dead["attempts"]) == (poison.id, "ops.poison", 2)
    assert (dead["error_type"], dead["error_message"]) == ("ValueError", "poison attempt 2")
    assert dead["reason"] == "retries_exhausted"
    shown = (await asyncio.to_thread(cli, "dlq", "show", "ops", poison.id, "--json")).json()
    assert "ValueError" in shown["traceback"]
    assert shown["message"]["headers"]["x-death"][0]["queue"] == "ops"

    assert (await asyncio.to_thread(cli, "dlq", "replay", "ops")).code == 0
    with pytest.raises(JobFailed):
        await (await app.ajob(poison.id)).aresult(timeout=30)
    assert (tmp_path / "poison").read_text() == "xxxx"

    workers = (await asyncio.to_thread(cli, "workers", "--json")).json()["items"]
    assert [entry["queues"] for entry in workers] == [["ops"]]
    worker.send_signal(signal.SIGTERM)
    _, log = worker.communicate(timeout=30)
    assert worker.returncode == 0, log
    assert PASSWORD_IN_URL not in log
    assert f"on {open_broker(broker_url).location}" in log, log
    lines = [json.loads(line) for line in log.splitlines()]
    banner = next(line for line in lines if line["logger"] == "conveyor.worker")
    assert banner["message"].startswith(f"conveyor {__version__} worker ")
    by_job: dict[tuple[str, int], dict[str, Any]] = {}
    for line in lines:  # the first run of each attempt; the replay's come later
        by_job.setdefault((line.get("job_id"), line.get("attempt")), line)
    assert by_job[(added.id, 1)]["level"] == "DEBUG"
    assert "succeeded in" in by_job[(added.id, 1)]["message"]
    retried = by_job[(flaky.id, 1)]
    assert (retried["level"], retried["task"], retried["reason"]) == (
        "WARNING",
        "ops.flaky",
        "retrying",
    )
    given_up = by_job[(poison.id, 2)]
    assert (given_up["level"], given_up["reason"]) == ("ERROR", "retries_exhausted")
    assert "ValueError: poison attempt 2" in given_up["message"]


async def test_the_api_and_console_show_the_servers_queues_and_dead_letters(
    app: App, worker: subprocess.Popen[str]
) -> None:
    poison = await app.get_task("ops.poison").adelay("poison")
    with pytest.raises(JobFailed):
        await poison.aresult(timeout=30)

    async with serve(app) as client:
        health = (await client.get("/health")).json()
        assert health["status"] in ("ok", "degraded"), health
        listed = (await client.get("/api/queues")).json()["items"]
        queues = {row["name"]: row for row in listed}
        assert queues["ops"]["stats"]["ready"] == 0
        assert queues[dead_letter_queue("ops")]["stats"]["ready"] == 1
        dead = (await client.get("/api/queues/ops/dead-letters")).json()["items"]
        assert [row["job_id"] for row in dead] == [poison.id]
        for path in ("/health", "/api/queues", "/metrics"):
            assert PASSWORD_IN_URL not in (await client.get(path)).text

    async with console(app) as client:
        await logged_in(client)
        pages: list[httpx.Response] = [
            await client.get(path)
            for path in ("/", "/queues/ops", "/dead-letters/ops", f"/dead-letters/ops/{poison.id}")
        ]
        for page in pages:
            assert page.status_code == 200, (page.url, re.sub(r"<[^>]+>", " ", page.text)[-1500:])
            assert PASSWORD_IN_URL not in page.text
        browsable = Capability.BROWSE in open_broker(app.broker_url).capabilities
        assert ("The queue is empty" if browsable else "without taking them") in pages[1].text
        assert "ops.poison" in pages[2].text
        assert "poison attempt 2" in pages[3].text
