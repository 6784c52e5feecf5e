"""Consumer groups under crashes: real member processes on one SQLite file, or on Redis.

Each test produces keyed records from this process, runs three group members as child
processes (``python -m tests.reliability.stream_member``, see that file) and counts every
record they processed from their own logs: a member writes and fsyncs one line per record
before it commits (commit-after-process), and logs each accepted commit and each change of
the partitions it reads. Who owns what, committed offsets and lag come from the broker's
``describe_group``, polled by this process.

Every child starts in a session of its own, and teardown SIGKILLs each one's process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conveyor.app import App
from conveyor.brokers.base import Broker
from conveyor.brokers.stream_types import GroupInfo
from conveyor.events.producer import record
from tests.backend_urls import BACKENDS
from tests.reliability.children import ChildProcess

ROOT = Path(__file__).resolve().parents[2]
TOPIC, GROUP = "ledger", "ledger-readers"
PARTITIONS, KEYS, PER_KEY = 6, 60, 50
TOTAL = KEYS * PER_KEY
BATCH = 20  # records per poll; a member commits after each batch it processed
# Each member sleeps this long after each commit, so that a member's two partitions
# (about 1,000 records, 50 batches) take about two seconds: long enough to kill one midway.
PAUSE = 0.03
SESSION_TIMEOUT, HEARTBEAT_INTERVAL = 2.0, 0.3

pytestmark = pytest.mark.timeout(60)

Event = dict[str, Any]
Offset = tuple[int, int]  # (partition, offset)


# the member processes


@dataclass
class Member(ChildProcess):
    """One member process and the JSON-lines log it writes."""

    log: Path
    stderr: Path
    hold_file: Path

    def events(self, kind: str | None = None) -> list[Event]:
        """The log's events (a line still being written is left out)."""
        try:
            data = self.log.read_text()
        except FileNotFoundError:
            return []
        lines = data.split("\n")
        lines.pop()  # "" after the last newline, or a line being written now
        events = [json.loads(line) for line in lines]
        return [e for e in events if kind is None or e["event"] == kind]

    def records(self) -> list[Event]:
        return self.events("record")

    @property
    def member_id(self) -> str | None:
        ids = [e["member"] for e in self.events() if e.get("member")]
        return ids[-1] if ids else None

    def read_since_last_change(self) -> int:
        """Records processed since the partitions it reads last changed."""
        events = self.events()
        changes = [i for i, e in enumerate(events) if e["event"] == "owns"]
        start = changes[-1] if changes else len(events)
        return sum(e["event"] == "record" for e in events[start:])

    def owns(self) -> set[int]:
        """The partitions the member read after its last poll."""
        owns = self.events("owns")
        return set(owns[-1]["partitions"]) if owns else set()

    def output(self) -> str:
        stderr = self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        tail = "\n".join(line for line in text.splitlines() if '"record"' not in line)
        return f"--- {self.name} (pid {self.pid}) log without records ---\n{tail}\n{stderr}"


@dataclass
class Setting:
    url: str
    directory: Path
    client: App
    broker: Broker
    produced: dict[Offset, tuple[str, int]]  # (partition, offset) -> (key, n)
    members: list[Member] = field(default_factory=list)

    @property
    def go_file(self) -> Path:
        return self.directory / "go"

    async def start_members(self, count: int) -> list[Member]:
        """Start ``count`` members, and let them read once all of them joined the group."""
        started = [await self.start_member(f"member-{i}") for i in range(count)]

        async def all_joined() -> bool:
            return all(member.events("joined") for member in started)

        await self.until(all_joined, timeout=20, what="every member to join")
        self.go_file.touch()
        return started

    async def start_member(self, name: str) -> Member:
        log, stderr = self.directory / f"{name}.jsonl", self.directory / f"{name}.stderr"
        hold_file = self.directory / f"{name}.hold"
        with stderr.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m", "tests.reliability.stream_member", self.url, GROUP, str(log),
                "--topic", TOPIC, "--batch", str(BATCH), "--pause", str(PAUSE),
                "--session-timeout", str(SESSION_TIMEOUT),
                "--heartbeat-interval", str(HEARTBEAT_INTERVAL),
                "--go-file", str(self.go_file), "--hold-file", str(hold_file),
                cwd=ROOT,
                stdout=err,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        member = Member(name, process, log, stderr, hold_file)
        self.members.append(member)
        return member

    def check_alive(self) -> None:
        for member in self.members:
            if not member.stopped and member.process.returncode is not None:
                pytest.fail(f"exit code {member.process.returncode}\n{member.output()}")

    def outputs(self) -> str:
        return "\n".join(member.output() for member in self.members)

    async def until(
        self, condition: Callable[[], Awaitable[bool]], *, timeout: float, what: str
    ) -> None:
        """Poll ``condition`` until it holds; fail after ``timeout`` s or if a member dies."""
        deadline = time.monotonic() + timeout
        while not await condition():
            self.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what}\n" + self.outputs())
            await asyncio.sleep(0.02)

    async def describe(self) -> GroupInfo:
        return await self.broker.describe_group(GROUP)

    async def settled(self, members: list[Member], batches: int = 1) -> bool:
        """Each member reads two partitions, the group agrees, and each has read a batch.

        The first member in ``members`` must have read ``batches`` batches since.
        """
        info = await self.describe()
        owned: dict[str | None, set[int]] = {
            m.member_id: {tp.partition for tp in m.owned} for m in info.members
        }
        if set(owned) != {member.member_id for member in members}:
            return False
        for member in members:
            mine = member.owns()
            if len(mine) != PARTITIONS // len(members) or owned[member.member_id] != mine:
                return False
            if member.read_since_last_change() < 1:
                return False
        return members[0].read_since_last_change() >= batches * BATCH

    async def consumed(self) -> bool:
        """Every partition's committed offset is its end offset."""
        info = await self.describe()
        done = {p.partition for p in info.partitions if p.committed == p.end}
        return done == set(range(PARTITIONS))

    async def stop(self, member: Member) -> None:
        member.signal(signal.SIGTERM)
        assert await member.exit_code(10) == 0, member.output()
        assert member.events()[-1]["event"] == "closed", member.output()

    async def kill_all(self) -> None:
        for member in self.members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(member.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                member.process.kill()
            await member.process.wait()


async def produce(client: App) -> dict[Offset, tuple[str, int]]:
    """``PER_KEY`` records for each of ``KEYS`` keys, values ``{"key": K, "n": N}``."""
    await client.acreate_topic(TOPIC, PARTITIONS)
    producer = await client.aproducer()
    keys = [f"key-{k:02d}" for k in range(KEYS)]
    produced: dict[Offset, tuple[str, int]] = {}
    for start in range(0, PER_KEY, 10):
        values = [(key, n) for n in range(start, start + 10) for key in keys]
        batch = [record({"key": key, "n": n}, key=key) for key, n in values]
        for placed, value in zip(await producer.send_batch(TOPIC, batch), values, strict=True):
            produced[placed.partition, placed.offset] = value
    assert len(produced) == TOTAL
    assert {p for p, _ in produced} == set(range(PARTITIONS)), "a partition got no key"
    where = {value: place for place, value in produced.items()}
    for key in keys:  # one partition per key, its records in the order of n
        places = [where[key, n] for n in range(PER_KEY)]
        assert len({p for p, _ in places}) == 1, key
        assert places == sorted(places), key
    return produced


@pytest.fixture(params=["sqlite", "redis"])
async def setting(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setting]:
    """The group's broker: a SQLite file, or Redis (tests/backend_urls.py)."""
    url = BACKENDS[request.param](tmp_path)
    client = App(url)
    setting: Setting | None = None
    try:
        broker = await client.abroker()
        setting = Setting(url, tmp_path, client, broker, await produce(client))
        yield setting
    finally:
        if setting is not None:
            await setting.kill_all()
        await client.aclose()


# what the logs say


def check_records(setting: Setting, members: list[Member]) -> Counter[Offset]:
    """Each line names a produced record truly; returns how often each one was processed."""
    seen: Counter[Offset] = Counter()
    for member in members:
        for line in member.records():
            where = (line["partition"], line["offset"])
            assert where in setting.produced, f"{member.name} processed {where}, never produced"
            assert setting.produced[where] == (line["key"], line["n"]), line
            assert line["pid"] == member.pid, line
            seen[where] += 1
    assert set(seen) == set(setting.produced), f"{TOTAL - len(seen)} records never processed"
    return seen


def check_order_in_each_log(members: list[Member]) -> None:
    """A member processed each key's records in order and none of them twice."""
    for member in members:
        by_key: dict[str, list[int]] = defaultdict(list)
        for line in member.records():
            by_key[line["key"]].append(line["n"])
        for key, numbers in by_key.items():
            assert numbers == sorted(set(numbers)), f"{member.name} read {key} as {numbers}"


def by_key_in_time(members: list[Member]) -> dict[str, list[tuple[int, Member, Event]]]:
    """Each key's records in the order they were processed, by whichever member."""
    lines = [(line, member) for member in members for line in member.records()]
    lines.sort(key=lambda item: item[0]["t"])  # stable: a batch keeps its log order
    by_key: dict[str, list[tuple[int, Member, Event]]] = defaultdict(list)
    for line, member in lines:
        by_key[line["key"]].append((line["n"], member, line))
    return by_key


def first_read_after(members: list[Member], partition: int, after: float) -> float | None:
    """When one of ``members`` first logged reading ``partition`` after ``after``."""
    times = [
        e["t"]
        for member in members
        for e in member.events("owns")
        if e["t"] > after and partition in e["partitions"]
    ]
    return min(times, default=None)


# 1. SIGKILL


async def taken_over(
    setting: Setting, gone: str | None, partitions: set[int], new_owners: set[str | None]
) -> None:
    """Wait until the group has dropped ``gone`` and ``new_owners`` own its ``partitions``."""

    async def moved() -> bool:
        info = await setting.describe()
        owners = {p.partition: p.owner for p in info.partitions}
        return gone not in {m.member_id for m in info.members} and all(
            owners.get(p) in new_owners for p in partitions
        )

    await setting.until(moved, timeout=10, what=f"the new owners to own {sorted(partitions)}")


async def test_sigkilled_member_loses_its_partitions_after_the_session_timeout(
    setting: Setting,
) -> None:
    # The member is killed at the worst moment for commit-after-process: it has processed a
    # batch (the lines are fsynced) but not committed it. Only that batch may be read again,
    # by the members its partitions go to once the group drops it for silence.
    members = await setting.start_members(3)
    killed = members[1]

    async def settled() -> bool:  # and the member to kill has committed five batches
        return await setting.settled([killed, *members[::2]], batches=6)

    await setting.until(settled, timeout=20, what="three readers")
    survivors = [member for member in members if member is not killed]
    killed_id = killed.member_id
    its_partitions = killed.owns()
    survivors_before = {member.name: member.owns() for member in survivors}
    assert not set().union(*survivors_before.values()) & its_partitions

    killed.hold_file.touch()  # stop between processing a batch and committing it

    async def holding() -> bool:
        return bool(killed.events("holding"))

    await setting.until(holding, timeout=10, what="the member to hold a processed batch")
    killed.signal(signal.SIGKILL)
    killed_at = time.time()
    assert await killed.exit_code(5) == -signal.SIGKILL
    at_kill = {p.partition: p for p in (await setting.describe()).partitions}
    assert {p for p, lag in at_kill.items() if lag.owner == killed_id} == its_partitions
    committed = {p: lag.committed or 0 for p, lag in at_kill.items()}

    # It had processed records of its partitions, committed some, and left some to read.
    killed_lines = killed.records()
    assert all(line["t"] <= killed_at for line in killed_lines)
    held = {(e["partition"], e["offset"]) for e in killed_lines if e["t"] == killed_lines[-1]["t"]}
    assert held, "the killed member processed nothing"
    uncommitted = {
        (e["partition"], e["offset"])
        for e in killed_lines
        if e["offset"] >= committed[e["partition"]]
    }
    assert uncommitted == held, "what it had not committed is not just its last batch"
    assert {p for p, _ in held} <= its_partitions
    last_commit = killed.events("commit")[-1]["offsets"]
    assert {p: committed[p] for p in its_partitions} == {
        p: last_commit.get(str(p), 0) for p in its_partitions
    }, "the group's offsets are not the killed member's last commit"
    assert any(
        e["partition"] in its_partitions and e["offset"] < committed[e["partition"]]
        for e in killed_lines
    ), "the killed member committed nothing of its partitions"
    assert any(committed[p] < at_kill[p].end for p in its_partitions), "nothing left to read"

    # The coordinator drops it once it has been silent for the session timeout, and gives
    # its partitions to the survivors: not much sooner (it might have been alive), and no
    # later than a survivor's next heartbeat after that.
    survivor_ids = {member.member_id for member in survivors}

    await taken_over(setting, killed_id, its_partitions, survivor_ids)
    handover = time.time() - killed_at
    print(f"SIGKILL -> {sorted(its_partitions)} owned by the survivors: {handover:.2f}s")
    assert 1.0 < handover <= SESSION_TIMEOUT + 1.0, f"the handover took {handover:.2f}s"

    # The survivors' own logs show them reading the killed member's partitions, and then
    # sharing all six between them, three each.
    async def survivors_read_them() -> bool:
        return all(first_read_after(survivors, p, killed_at) for p in its_partitions)

    await setting.until(survivors_read_them, timeout=5, what="the survivors to read them")
    read_at = [
        (first_read_after(survivors, p, killed_at) or 0.0) - killed_at for p in its_partitions
    ]
    print(f"SIGKILL -> the survivors read {sorted(its_partitions)}: {max(read_at):.2f}s")
    assert 1.0 < min(read_at) <= max(read_at) <= SESSION_TIMEOUT + 1.0, read_at

    async def survivors_share_all() -> bool:
        first, second = (member.owns() for member in survivors)
        return len(first) == len(second) == 3 and first | second == set(range(PARTITIONS))

    await setting.until(survivors_share_all, timeout=5, what="the survivors to share all")
    for member in survivors:
        assert member.owns() != survivors_before[member.name], f"{member.name} took nothing"

    await setting.until(setting.consumed, timeout=30, what="every record to be committed")
    for member in survivors:
        await setting.stop(member)
    assert (await setting.describe()).members == (), "a member that closed is still in"

    # At least once: every record was processed. Twice only for the batch the member had
    # processed and not committed when it died: once by it, once by a survivor.
    seen = check_records(setting, members)
    twice = {where for where, count in seen.items() if count > 1}
    assert set(seen.values()) == {1, 2}
    assert twice == held, "a record was processed twice that had been committed"
    assert len(twice) <= BATCH
    again = [e for m in survivors for e in m.records() if (e["partition"], e["offset"]) in twice]
    assert len(again) == len(twice)
    assert all(e["t"] > killed_at + 1.0 for e in again)

    # Per key, records were processed in order; the one step back is at the handover, to
    # the first record the killed member had not committed, and no further.
    check_order_in_each_log(members)
    first_uncommitted: dict[str, int] = {}
    for where in held:
        key, n = setting.produced[where]
        first_uncommitted[key] = min(n, first_uncommitted.get(key, n))
    for key, order in by_key_in_time(members).items():
        numbers = [n for n, _, _ in order]
        if key not in first_uncommitted:
            assert numbers == list(range(PER_KEY)), (key, numbers)
            continue
        steps_back = [i for i in range(1, len(order)) if order[i][0] != order[i - 1][0] + 1]
        assert len(steps_back) == 1, (key, numbers)
        i = steps_back[0]
        last_n, before, last_before = order[i - 1]
        first_n, after, first_after = order[i]
        assert before is killed, (key, numbers)
        assert after in survivors, (key, numbers)
        assert last_before["t"] <= killed_at < first_after["t"], (key, numbers)
        assert first_n == first_uncommitted[key], (key, numbers)
        assert numbers == list(range(last_n + 1)) + list(range(first_n, PER_KEY)), key


# 2. SIGTERM: leaving the group


async def test_member_that_leaves_hands_its_partitions_over_at_once(setting: Setting) -> None:
    members = await setting.start_members(3)
    await setting.until(
        lambda: setting.settled(members, batches=3), timeout=20, what="three readers"
    )
    leaving, staying = members[0], members[1:]
    leaving_id = leaving.member_id
    its_partitions = leaving.owns()
    staying_ids = {member.member_id for member in staying}

    leaving.signal(signal.SIGTERM)
    sent = time.time()

    await taken_over(setting, leaving_id, its_partitions, staying_ids)
    handover = time.time() - sent
    print(f"SIGTERM -> {sorted(its_partitions)} owned by the others: {handover:.2f}s")
    assert handover <= 1.0, f"the handover took {handover:.2f}s"
    assert await leaving.exit_code(10) == 0, leaving.output()
    assert leaving.events()[-1]["event"] == "closed", leaving.output()

    # It had processed records of its partitions and committed them, but not to the end:
    # the others had some left to read, from its last commit on.
    its_lines = [e for e in leaving.records() if e["partition"] in its_partitions]
    assert its_lines, "it processed nothing of its partitions"
    last_commit = leaving.events("commit")[-1]["offsets"]
    start = {p: last_commit[str(p)] for p in its_partitions}
    for p in its_partitions:
        processed = [e["offset"] for e in its_lines if e["partition"] == p]
        assert not processed or start[p] == max(processed) + 1, "it left uncommitted records"
    ends = {p.partition: p.end for p in (await setting.describe()).partitions}
    assert any(start[p] < ends[p] for p in its_partitions), "nothing was left to hand over"

    await setting.until(setting.consumed, timeout=30, what="every record to be committed")
    for member in staying:
        await setting.stop(member)
    assert (await setting.describe()).members == ()

    # It committed what it had processed before it left: nothing was processed twice, the
    # others went on from where it stopped, and each key's records were processed in order.
    seen = check_records(setting, members)
    assert set(seen.values()) == {1}, f"{sum(n > 1 for n in seen.values())} processed twice"
    check_order_in_each_log(members)
    for key, order in by_key_in_time(members).items():
        assert [n for n, _, _ in order] == list(range(PER_KEY)), key
    for p in its_partitions:
        rest = sorted(
            e["offset"]
            for m in staying
            for e in m.records()
            if e["partition"] == p and e["t"] > sent
        )
        assert rest == list(range(start[p], ends[p])), p
