"""A real Chromium (Debian's, driven by Playwright) against a real server process.

Chromium comes from apt when it is missing (browser downloads do not work here, so
``playwright install`` is never used); a machine without apt skips these tests. The server
runs as ``python -m conveyor serve`` when that command mounts the console, else through
``tests.browser.console_server``; either way on a fresh SQLite file seeded with queues,
dead letters made by the real worker, a topic and a lagging consumer group.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor import QueueSpec
from conveyor.app import App
from conveyor.assignors import TopicPartition
from conveyor.brokers.stream_types import OffsetCommit
from conveyor.brokers.types import WorkerInfo
from conveyor.message import Message
from conveyor.worker.consume import Worker
from tests.browser.console_server import SCRIPT, URL_VARIABLE, make_app

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
TOKEN = "browser-token-0123456789abcdef"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed with apt-get when missing."""
    found = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip("no Chromium, and no apt-get to install it with")
    install = subprocess.run(
        "apt-get update && apt-get install -y chromium",
        shell=True,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    found = shutil.which("chromium")
    if install.returncode != 0 or not found:
        last = (install.stderr or install.stdout).strip().splitlines()[-1:] or ["no output"]
        pytest.fail(f"apt-get could not install chromium: {last[0]}")
    return found


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    """Playwright's sync API runs an event loop on this thread while it is started: stop it
    with the module, so that the tests after these get the thread back."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser tests need Playwright: pip install playwright"
    )
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


@dataclass(frozen=True)
class Served:
    base: str
    token: str
    dead_jobs: tuple[str, ...]
    done_job: str
    observer: App
    """The test's own App on the server's file, to check what the console did."""

    def waiting(self, queue: str) -> list[str]:
        """The ids of the messages waiting in ``queue``, read through the broker."""
        found = self.observer.call_sync(lambda broker: broker.browse(queue))
        return [queued.message.id for queued in found]

    def publish(self, queue: str, body: bytes) -> None:
        message = Message(body, routing_key=queue)
        self.observer.call_sync(lambda broker: broker.publish(message))


async def seed(url: str) -> tuple[tuple[str, ...], str]:
    """Queues, two dead letters made by the real worker, a finished job, a topic, a group
    with lag and a worker's heartbeat. Returns the dead jobs' ids and the finished one's."""
    app = make_app(url)
    try:
        dead = [await app.get_task("mail.bounce").adelay(f"user{n}@example.com") for n in (1, 2)]
        done = await app.get_task("mail.send").adelay("ada@example.com")
        await Worker(app, queues=["mail"], concurrency=1).run_until_idle()
        await app.get_task("mail.send").adelay("bob@example.com")
        broker = await app.abroker()
        await broker.declare_queue(QueueSpec("raw"))
        await broker.publish(Message(SCRIPT.encode(), routing_key="raw", content_type="text/plain"))
        await app.acreate_topic("orders", partitions=3)
        for number in range(12):
            await app.aproduce("orders", {"order": number}, key=f"customer-{number % 5}")
        await broker.commit_offsets(OffsetCommit("billing", {TopicPartition("orders", 0): 1}))
        now = time.time()
        worker = WorkerInfo("seed-1", "seed-host", 4242, ("mail",), now, now, 0, 3, 2)
        await broker.results().heartbeat(worker)
        return tuple(job.id for job in dead), done.id
    finally:
        await app.aclose()


def serve_mounts_console() -> bool:
    """Whether ``conveyor serve`` exists and its server carries the console."""
    from conveyor.cli import parser
    from conveyor.server import ServerSettings, create_server

    registered = any(
        isinstance(action, argparse._SubParsersAction) and "serve" in action.choices
        for action in parser()._actions
    )
    if not registered:
        return False
    server = create_server(App("memory://"), ServerSettings())
    return getattr(server.state, "console", None) is not None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("console")
    url = f"sqlite:///{folder / 'conveyor.db'}"
    # In a thread of its own: Playwright's sync API keeps an event loop on this one.
    with ThreadPoolExecutor(1) as thread:
        dead_jobs, done_job = thread.submit(asyncio.run, seed(url)).result()
    token_file = folder / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    app_path = "tests.browser.console_server:served"
    if serve_mounts_console():
        command = [sys.executable, "-m", "conveyor", "serve", app_path, "--log-level", "warning"]
    else:
        command = [sys.executable, "-m", "tests.browser.console_server"]
    command += ["--port", str(port), "--token-file", str(token_file)]
    environ = {key: value for key, value in os.environ.items() if key != "CONVEYOR_API_TOKEN"}
    environ[URL_VARIABLE] = url
    # One connection for the whole module, opened before the server and closed after it.
    # Opening and closing a connection per check would trip a bug outside the console: a
    # process that opens a second connection to a file it already has open (the server
    # does, for job figures) loses SQLite's lock on it (the file's header check opens and
    # closes it), so another process closing its last connection deletes the WAL under the
    # server, whose later writes then stay invisible until it stops.
    observer = make_app(url)
    observer.call_sync(lambda broker: broker.ping())
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, base, folder / "server.log")
        yield Served(base, TOKEN, dead_jobs, done_job, observer)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        observer.close()


def wait_until_up(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{base}/login", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail("the server did not answer within 20 s")


def answer(dialog: Any, errors: list[str]) -> None:
    """Confirm the console's own questions; any other dialog (an alert from a script that
    got through unescaped, say) is an error."""
    if dialog.type == "confirm":
        dialog.accept()
        return
    errors.append(f"unexpected {dialog.type} dialog: {dialog.message}")
    dialog.dismiss()


@pytest.fixture
def console_errors() -> list[str]:
    """What the page wrote to the browser console as errors (a test may take out those it
    caused on purpose)."""
    return []


@pytest.fixture
def page(browser: Any, served: Served, console_errors: list[str]) -> Iterator[Any]:
    """A fresh browser context and page; fails the test on any console error."""
    context = browser.new_context(base_url=served.base, viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    errors = console_errors
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("dialog", lambda dialog: answer(dialog, errors))
    yield opened
    context.close()
    assert not errors, f"the browser console showed errors: {errors}"
