"""The embedded broker shared by real OS processes on one SQLite file.

Children run roles from tests/backends/processes.py and report through files; every child
still running at teardown is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor import Message, QueueSpec, open_broker

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)


@dataclass
class Child:
    """One child process and the file its output goes to."""

    role: str
    process: asyncio.subprocess.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return f"{self.role} child output:\n{self.log.read_text(errors='replace')}"

    async def exited(self) -> int:
        """Wait (bounded by the caller's ``asyncio.timeout``) for the exit code."""
        return await self.process.wait()


class Children:
    """Child processes of one test; whatever still runs at teardown is killed."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[Child] = []

    async def start(self, role: str, *args: str) -> Child:
        log = self.logs / f"child-{len(self.started)}-{role}.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "tests.backends.processes", role, *args),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        child = Child(role, process, log)
        self.started.append(child)
        return child

    def check_alive(self) -> None:
        """Fail the test at once if a child died, with its output."""
        for child in self.started:
            if child.process.returncode not in (None, 0):
                pytest.fail(f"exit code {child.process.returncode}; {child.output()}")

    async def file(self, path: Path) -> Any:
        """Wait for a child to write the JSON file ``path`` and return its contents."""
        while (content := _read_json(path)) is None:
            self.check_alive()
            await asyncio.sleep(0.01)
        return content

    async def kill_all(self) -> None:
        for child in self.started:
            if child.process.returncode is None:
                child.process.kill()
            await child.process.wait()


@pytest.fixture
async def children(tmp_path: Path) -> AsyncIterator[Children]:
    spawned = Children(tmp_path)
    try:
        yield spawned
    finally:
        await spawned.kill_all()


def _database_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def _read_json(path: Path) -> Any:
    """The JSON in ``path``, or None while it does not exist (children write it whole)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _waiters(path: str) -> int:
    """Receivers registered to be woken, read from the store's ``waiters`` table."""
    with sqlite3.connect(path, timeout=5) as raw:
        (waiting,) = raw.execute("SELECT count(*) FROM waiters").fetchone()
    raw.close()
    return int(waiting)


async def test_lifetime_counters_count_what_a_killed_script_sent(
    sqlite_url: str, children: Children
) -> None:
    sender = await children.start("send-and-die", sqlite_url, "10020")
    assert await sender.exited() == -signal.SIGKILL, sender.output()
    async with open_broker(sqlite_url) as broker:
        stats = await broker.queue_stats("default")
    assert (stats.ready, stats.published) == (10_020, 10_020)


async def test_producer_and_two_consumers_deliver_each_message_exactly_once(
    sqlite_url: str, tmp_path: Path, children: Children
) -> None:
    count = 20_000
    async with open_broker(sqlite_url) as broker:
        await broker.declare_queue(QueueSpec("work"))
    done = tmp_path / "producer-done"
    acked_files = [tmp_path / "acked-a.txt", tmp_path / "acked-b.txt"]
    consumers = []
    for index, acked in enumerate(acked_files):
        ready = tmp_path / f"ready-{index}"
        consumers.append(
            await children.start("consume", sqlite_url, "work", str(acked), str(ready), str(done))
        )
        async with asyncio.timeout(10):
            await children.file(ready)

    producer = await children.start("produce", sqlite_url, "work", str(count), "200")
    async with asyncio.timeout(20):
        assert await producer.exited() == 0, producer.output()
    done.touch()
    async with asyncio.timeout(10):
        for consumer in consumers:
            assert await consumer.exited() == 0, consumer.output()

    acked_a, acked_b = (file.read_text().split() for file in acked_files)
    duplicates = {i: n for i, n in Counter(acked_a + acked_b).items() if n > 1}
    assert duplicates == {}, f"{len(duplicates)} ids acked more than once"
    assert set(acked_a) & set(acked_b) == set()
    assert set(acked_a) | set(acked_b) == {str(i) for i in range(count)}
    assert acked_a, "consumer a got nothing: the two consumers did not share the work"
    assert acked_b, "consumer b got nothing: the two consumers did not share the work"
    async with open_broker(sqlite_url) as broker:
        stats = await broker.queue_stats("work")
    assert stats.depth == 0
    assert (stats.published, stats.delivered, stats.acked) == (count, count, count)


async def test_sigkilled_consumer_messages_are_redelivered_after_the_lease(
    sqlite_url: str, tmp_path: Path, children: Children
) -> None:
    total, held_count, lease = 50, 20, 1.0
    async with open_broker(sqlite_url) as broker:
        await broker.declare_queue(QueueSpec("work"))
        await broker.publish_batch(
            [Message(str(i).encode(), routing_key="work") for i in range(total)]
        )

    held_file = tmp_path / "held.json"
    holder = await children.start(
        "hold", sqlite_url, "work", str(held_count), str(lease), str(held_file)
    )
    async with asyncio.timeout(10):
        held = await children.file(held_file)
    assert [h["delivery_count"] for h in held] == [1] * held_count
    os.kill(holder.pid, signal.SIGKILL)
    async with asyncio.timeout(5):
        assert await holder.exited() == -signal.SIGKILL

    drained_file = tmp_path / "drained.json"
    drainer = await children.start(
        "drain", sqlite_url, "work", str(total), "1.5", str(drained_file)
    )
    async with asyncio.timeout(20):
        assert await drainer.exited() == 0, drainer.output()
    drained = _read_json(drained_file)

    received = Counter(d["id"] for d in drained)
    assert received == Counter(str(i) for i in range(total)), "lost or duplicated messages"
    held_ids = {h["id"] for h in held}
    deadline = max(h["lease_deadline"] for h in held)
    for delivery in drained:
        if delivery["id"] in held_ids:
            assert (delivery["delivery_count"], delivery["redelivered"]) == (2, True), delivery
            assert delivery["received_at"] >= deadline - 0.01, "redelivered before the lease lapsed"
        else:
            assert (delivery["delivery_count"], delivery["redelivered"]) == (1, False), delivery
    async with open_broker(sqlite_url) as broker:
        stats = await broker.queue_stats("work")
    assert (stats.depth, stats.acked) == (0, total)


async def test_waiting_consumer_in_another_process_wakes_promptly(
    sqlite_url: str, tmp_path: Path, children: Children
) -> None:
    # A poll interval longer than the wait: only a wake-up can end the wait early.
    child_url = f"{sqlite_url}?poll_interval=30"
    async with open_broker(sqlite_url) as broker:
        await broker.declare_queue(QueueSpec("work"))
        report = tmp_path / "waited.json"
        ready = tmp_path / "ready"
        waiter = await children.start("wait-one", child_url, "work", "10", str(ready), str(report))
        async with asyncio.timeout(10):
            await children.file(ready)
            await _until_a_receiver_waits(_database_path(sqlite_url), children)
        await broker.publish(Message(b"wake up", routing_key="work"))
        async with asyncio.timeout(15):
            result = await children.file(report)
            assert await waiter.exited() == 0, waiter.output()
    assert result["received"] == 1
    assert result["latency"] < 1.0, result
    assert result["waited"] < 5.0, result


async def _until_a_receiver_waits(path: str, children: Children) -> None:
    """Wait until the child has registered as a waiter, so the publish must wake it."""
    while not _waiters(path):
        children.check_alive()
        await asyncio.sleep(0.01)


READ_READY = """
import asyncio, sys
from conveyor import open_broker

async def main(url):
    async with open_broker(url) as broker:
        print((await broker.queue_stats("q")).ready)

asyncio.run(main(sys.argv[1]))
"""


async def _ready_seen_by_another_process(url: str) -> int:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", READ_READY, url, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await child.communicate()
    return int(out)


async def test_a_second_connection_in_one_process_keeps_writes_visible_to_others(
    tmp_path: Path,
) -> None:
    """Opening the file again in-process must not drop SQLite's locks (closing any descriptor
    of a file releases all of a process's POSIX locks on it), or another process could
    delete the WAL under the first connection and stop seeing what it writes."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    async with open_broker(url) as first:
        await first.declare_queue(QueueSpec("q"))
        await first.publish(Message(b"1", routing_key="q"))
        async with open_broker(url):  # as App.call_sync's own connection does
            assert await _ready_seen_by_another_process(url) == 1
            await first.publish(Message(b"2", routing_key="q"))
            assert await _ready_seen_by_another_process(url) == 2
