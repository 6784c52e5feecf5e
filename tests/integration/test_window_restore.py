"""Windows kept in a WindowStore across SIGKILL, restart and replay, on the embedded engine.

This process produces clicks over four partitions and computes what each page's windows
must hold with a plain dict; a child process (``python -m tests.integration.window_counter``,
see that file) counts them with TumblingWindows in a WindowStore and sends each closed
window to an output topic. The first child is stopped at a chosen point mid-run and
SIGKILLed; a second one takes over. The windows reported, each at least once and every
copy alike, must be exactly the reference.

Every child starts in a session of its own, and teardown SIGKILLs each one's process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conveyor.app import App
from conveyor.assignors import TopicPartition
from conveyor.brokers.base import Broker
from conveyor.brokers.stream_types import TopicSpec
from conveyor.errors import ConfigError, DecodeError
from conveyor.events.producer import record
from conveyor.events.window_store import WindowStore
from conveyor.events.windows import TumblingWindows

ROOT = Path(__file__).resolve().parents[2]
TOPIC, PARTITIONS, CLICKS, SIZE = "clicks", 4, 600, 60.0
END = "__end__"
"""The page of one last click per partition, far ahead: it lets every real window close."""

pytestmark = pytest.mark.timeout(120)

Window = tuple[str, float]  # (page, start)


@dataclass
class Child:
    process: asyncio.subprocess.Process
    status: Path
    stderr: Path

    def state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.status.read_text()))
        except FileNotFoundError:
            return {}

    def output(self) -> str:
        return self.stderr.read_text(errors="replace") if self.stderr.exists() else ""


@dataclass
class Setting:
    url: str
    directory: Path
    broker: Broker
    expected: dict[Window, tuple[int, float]]
    children: list[Child] = field(default_factory=list)

    async def start(self, name: str, group: str, output: str, *options: str) -> Child:
        await self.broker.create_topic(TopicSpec(output))
        status, stderr = self.directory / f"{name}.json", self.directory / f"{name}.stderr"
        with stderr.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.integration.window_counter",
                self.url, group, output, str(status), *options,
                cwd=ROOT, stdout=err, stderr=err, start_new_session=True,
            )  # fmt: skip
        child = Child(process, status, stderr)
        self.children.append(child)
        return child

    async def until(
        self, condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 60
    ) -> None:
        """Poll ``condition`` until it holds; fail past ``timeout`` s or if a child died."""
        deadline = time.monotonic() + timeout
        while not await condition():
            for child in self.children:
                if child.process.returncode not in (None, -signal.SIGKILL):
                    pytest.fail(f"a child exited with {child.process.returncode}\n{child.output()}")
            if time.monotonic() > deadline:
                outputs = "\n".join(child.output() for child in self.children)
                pytest.fail(f"timed out after {timeout}s waiting for {what}\n{outputs}")
            await asyncio.sleep(0.05)

    async def kill(self, child: Child) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.process.pid, signal.SIGKILL)
        assert await asyncio.wait_for(child.process.wait(), 10) == -signal.SIGKILL

    async def kill_all(self) -> None:
        for child in self.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
            await child.process.wait()

    async def reported(self, output: str) -> dict[Window, list[tuple[int, float]]]:
        """Every copy of every window sent to ``output``, by page and start."""
        copies: dict[Window, list[tuple[int, float]]] = {}
        log, position = TopicPartition(output, 0), 0
        while records := await self.broker.fetch({log: position}):
            for item in records:
                body = json.loads(item.value or b"")
                if body["key"] != END:
                    window = (body["key"], body["start"])
                    copies.setdefault(window, []).append((body["count"], body["total"]))
            position = records[-1].offset + 1
        return copies

    async def all_reported(self, output: str) -> bool:
        return set(await self.reported(output)) >= set(self.expected)

    async def open_windows_in_changelog(self, group: str) -> int:
        log = TopicPartition(f"{group}.per-page.changelog", 0)
        latest: dict[bytes | None, Any] = {}
        for item in await self.broker.fetch({log: 0}, max_records=10_000):
            latest[item.key] = json.loads(item.value or b"")
        return sum(len(snapshot["windows"]) for snapshot in latest.values())


async def produce(app: App) -> dict[Window, tuple[int, float]]:
    """The clicks, and per page and minute how many there were and what they add up to,
    counted here with a dict: the reference the windows must match."""
    await app.acreate_topic(TOPIC, PARTITIONS)
    producer = await app.aproducer()
    expected: dict[Window, tuple[int, float]] = {}
    clicks = []
    for n in range(CLICKS):
        timestamp, page, amount = 10_000.0 + n * 1.3, f"/p{n % 7}", n % 5
        clicks.append(
            record({"page": page, "amount": amount}, key=f"user{n % 23}", timestamp=timestamp)
        )
        start = timestamp // SIZE * SIZE
        count, total = expected.get((page, start), (0, 0.0))
        expected[(page, start)] = (count + 1, total + amount)
    for start in range(0, CLICKS, 100):
        await producer.send_batch(TOPIC, clicks[start : start + 100])
    last = 10_000.0 + CLICKS * 1.3 + 10 * SIZE
    ends = [
        record({"page": END, "amount": 0}, partition=p, timestamp=last) for p in range(PARTITIONS)
    ]
    await producer.send_batch(TOPIC, ends)
    return expected


@pytest.fixture
async def setting(tmp_path: Path) -> AsyncIterator[Setting]:
    url = f"sqlite:///{tmp_path / 'conveyor.db'}"
    app = App(url)
    setting: Setting | None = None
    try:
        expected = await produce(app)
        setting = Setting(url, tmp_path, await app.abroker(), expected)
        yield setting
    finally:
        if setting is not None:
            await setting.kill_all()
        await app.aclose()


async def check_exact(setting: Setting, output: str) -> None:
    await setting.until(lambda: setting.all_reported(output), "every window to be reported")
    copies = await setting.reported(output)
    for window, seen in copies.items():
        assert len(set(seen)) == 1, f"{window} was reported as {seen}"
    assert {window: seen[0] for window, seen in copies.items()} == setting.expected


async def kill_midway(setting: Setting, group: str, output: str, *options: str) -> None:
    """Run a child until it holds mid-run with windows open, and SIGKILL it there."""
    first = await setting.start("first", group, output, "--hold-after", "6", *options)

    async def holding() -> bool:
        return bool(first.state().get("holding"))

    await setting.until(holding, "the first child to stop mid-run")
    assert not await setting.all_reported(output)
    assert await setting.open_windows_in_changelog(group) > 0
    await setting.kill(first)


async def test_windows_open_when_a_consumer_is_killed_come_back_after_its_restart(
    setting: Setting,
) -> None:
    await kill_midway(setting, "counts", "page-counts")
    second = await setting.start("second", "counts", "page-counts")
    await check_exact(setting, "page-counts")
    assert second.state()["late"] == 0


async def test_a_kill_between_snapshot_and_commit_replays_onto_the_snapshot_once(
    setting: Setting,
) -> None:
    await kill_midway(setting, "counts", "page-counts", "--hold-at", "saved")
    committed = await setting.broker.committed_offsets("counts")
    second = await setting.start("second", "counts", "page-counts")
    await check_exact(setting, "page-counts")
    assert second.state()["skipped"] > 0, f"nothing read again past {committed}"
    assert second.state()["late"] == 0


async def test_a_replay_from_the_beginning_after_a_restart_counts_nothing_twice(
    setting: Setting,
) -> None:
    await kill_midway(setting, "counts", "page-counts")
    second = await setting.start("second", "counts", "page-counts", "--replay")
    await check_exact(setting, "page-counts")
    assert second.state()["skipped"] > 0
    # and a new group replays the whole topic into windows of its own
    await setting.start("fresh", "recount", "page-recounts")
    await check_exact(setting, "page-recounts")


# in one process: a rebalance hands partitions over with their state


@dataclass
class Member:
    store: WindowStore
    windows: TumblingWindows
    sums: dict[Window, tuple[int, float]] = field(default_factory=dict)
    batches: int = 0


async def count(member: Member, stopping: asyncio.Event, pause_after: int = 0) -> None:
    """Feed the member's windows until ``stopping``; with ``pause_after``, stop reading
    (but keep polling, so that the group can rebalance) after that many batches."""
    consumer = member.store.consumer
    async with consumer:
        async for batch in member.store.batches(timeout=0.05, max_records=20):
            closed = batch.closed
            for click in batch.records:
                body = click.json()
                closed += member.windows.add(
                    body["page"],
                    click.timestamp,
                    body["amount"],
                    partition=click.topic_partition,
                    offset=click.offset,
                )
            for result in closed:
                if result.key != END:
                    count, total = member.sums.get((result.key, result.start), (0, 0.0))
                    member.sums[(result.key, result.start)] = (
                        count + result.count,
                        total + result.total,
                    )
            member.batches += bool(batch.records)
            if member.batches == pause_after and batch.records:
                consumer.pause(*consumer.assignment())
            if stopping.is_set():
                break
        await member.store.commit()


def join(app_broker: Broker, group: str) -> Member:
    windows = TumblingWindows(SIZE)
    store = WindowStore(app_broker, windows, group=group, name="per-page")
    store.open_consumer([TOPIC], auto_offset_reset="earliest", heartbeat_interval=0.1)
    return Member(store, windows)


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.02)


async def test_partitions_that_move_to_another_member_take_their_windows_along(app: App) -> None:
    expected = await produce(app)
    broker = await app.abroker()
    stopping = asyncio.Event()
    first, second = join(broker, "split"), join(broker, "split")
    tasks = [asyncio.create_task(count(first, stopping, pause_after=6))]
    try:
        await wait_for(lambda: first.batches >= 6, "the first member to read six batches")
        assert first.windows.snapshot(first.store.consumer.assignment())
        tasks.append(asyncio.create_task(count(second, stopping)))
        owners = (first.store.consumer, second.store.consumer)

        def split() -> bool:
            held = [consumer.assignment() for consumer in owners]
            return all(held) and len(held[0] | held[1]) == PARTITIONS

        await wait_for(split, "the group to share the partitions")
        first.store.consumer.resume(*first.store.consumer.assignment())

        def totals() -> dict[Window, tuple[int, float]]:
            summed: dict[Window, tuple[int, float]] = {}
            for member in (first, second):
                for window, (count, total) in member.sums.items():
                    before = summed.get(window, (0, 0.0))
                    summed[window] = (before[0] + count, before[1] + total)
            return summed

        # partial windows come from both members; wait for their sums to reach the reference
        await wait_for(lambda: totals() == expected, "the sums to match the reference")
        assert set(first.sums) & set(second.sums), "no window was open across the handover"
        assert (first.windows.late, second.windows.late) == (0, 0)
    finally:
        stopping.set()
        await asyncio.gather(*tasks)


# what the store refuses


async def test_a_stores_consumer_commits_only_through_the_store(app: App) -> None:
    broker = await app.abroker()
    store = WindowStore(broker, TumblingWindows(SIZE), group="g", name="w")
    with pytest.raises(ConfigError, match="open the store's consumer first"):
        store.consumer  # noqa: B018
    for option in ({"enable_auto_commit": True}, {"on_revoke": None}, {"group": "h"}):
        with pytest.raises(ConfigError, match=r"sets \w+ itself; leave it out"):
            store.open_consumer([TOPIC], **option)
    store.open_consumer([TOPIC])
    with pytest.raises(ConfigError, match="one store per consumer"):
        store.open_consumer([TOPIC])
    assert store.changelog == "g.w.changelog"
    with pytest.raises(ConfigError, match="window store name"):
        WindowStore(broker, TumblingWindows(SIZE), group="g", name="no spaces")


async def test_a_changelog_record_that_is_not_json_names_the_way_out(app: App) -> None:
    await produce(app)
    broker = await app.abroker()
    first = join(broker, "broken")
    async with first.store.consumer:
        async for _ in first.store.batches(timeout=0.05):
            break
    producer = await app.aproducer()
    keys = [f"{TOPIC}/{p}" for p in range(PARTITIONS)]
    await producer.send_batch(first.store.changelog, [record("{oops", key=k) for k in keys])
    second = join(broker, "broken")
    async with second.store.consumer:
        with pytest.raises(DecodeError, match="delete the changelog topic"):
            async for _ in second.store.batches(timeout=0.05):
                pass
