"""Task workers under crashes and signals: real `conveyor worker` processes on a SQLite file
(and, for SIGKILL, two workers and schedules, on Redis).

Each test enqueues from this process, runs workers as child processes
(``python -m conveyor worker tests.reliability.app:app``), and then counts every run: the
tasks append ``JOB_ID PID`` to a log file (tests/reliability/tasks.py), so the log says how
many times each job ran and in which process, whatever the broker believes. Job records
and queue statistics come from the broker's own API.

Every child starts in a session of its own, and teardown SIGKILLs the whole group, so a
supervisor's workers die with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conveyor.app import App
from conveyor.brokers.base import Broker
from conveyor.brokers.types import JobStatus, WorkerInfo
from conveyor.tasks.states import dead_letter_queue
from conveyor.tasks.task import IDEMPOTENCY_HEADER
from tests.backend_urls import BACKENDS
from tests.reliability.children import ChildProcess
from tests.reliability.tasks import (
    LEASE_TIMEOUT,
    LOG_ENV,
    TICK_EVERY,
    TICK_QUEUE,
    URL_ENV,
    Tasks,
    register,
)

ROOT = Path(__file__).resolve().parents[2]
APP_SPEC = "tests.reliability.app:app"
QUEUE = "default"

pytestmark = pytest.mark.timeout(90)


# child processes


@dataclass
class Child(ChildProcess):
    """A worker process and the file its output goes to."""

    output_file: Path

    def output(self) -> str:
        text = self.output_file.read_text(errors="replace")
        return f"--- {self.name} (pid {self.pid}) output ---\n{text}"


class Children:
    """The test's child processes; teardown SIGKILLs each one's process group."""

    def __init__(self, directory: Path, environment: dict[str, str]) -> None:
        self.directory = directory
        self.environment = environment
        self.started: list[Child] = []

    async def start(self, name: str, *arguments: str) -> Child:
        output_file = self.directory / f"child-{len(self.started)}-{name}.out"
        with output_file.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *arguments,
                cwd=ROOT,
                env=self.environment,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = Child(name, process, output_file)
        self.started.append(child)
        return child

    async def worker(self, name: str, *options: str) -> Child:
        """``python -m conveyor worker tests.reliability.app:app OPTIONS...``, on the
        default queue alone unless the options name queues (the ticks have their own)."""
        queues = () if "--queues" in options else ("--queues", QUEUE)
        return await self.start(name, "-m", "conveyor", "worker", APP_SPEC, *queues, *options)

    def check_alive(self) -> None:
        """Fail at once, with its output, if a child we did not stop has exited."""
        for child in self.started:
            if not child.stopped and child.process.returncode is not None:
                pytest.fail(f"exit code {child.process.returncode}\n{child.output()}")

    def outputs(self) -> str:
        return "\n".join(child.output() for child in self.started)

    async def kill_all(self) -> None:
        for child in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
            await child.process.wait()


# the run log


@dataclass
class Runs:
    """The run log: one ``(job_id, pid)`` per run, in the order they were written."""

    entries: list[tuple[str, int]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path, *, complete: bool = False) -> Runs:
        """Parse the log; ``complete`` once no writer is left (no line may be cut short)."""
        try:
            data = path.read_text()
        except FileNotFoundError:
            return cls()
        lines = data.split("\n")
        tail = lines.pop()  # "" after the last newline, or a line being written now
        assert not (complete and tail), f"the run log ends in a partial line {tail!r}"
        entries = []
        for line in lines:
            job_id, _, pid = line.partition(" ")
            assert job_id, f"malformed run log line {line!r}"
            assert pid.isdigit(), f"malformed run log line {line!r}"
            entries.append((job_id, int(pid)))
        return cls(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def counts(self) -> Counter[str]:
        return Counter(job_id for job_id, _ in self.entries)

    def job_ids(self) -> set[str]:
        return {job_id for job_id, _ in self.entries}

    def pids(self) -> set[int]:
        return {pid for _, pid in self.entries}

    def pids_by_job(self) -> dict[str, list[int]]:
        by_job: dict[str, list[int]] = defaultdict(list)
        for job_id, pid in self.entries:
            by_job[job_id].append(pid)
        return by_job

    def duplicates(self) -> dict[str, int]:
        return {job_id: n for job_id, n in self.counts().items() if n > 1}


# the test's own view of the broker


@dataclass
class Setting:
    url: str
    log: Path
    client: App
    tasks: Tasks
    broker: Broker
    children: Children

    def runs(self, *, complete: bool = False) -> Runs:
        return Runs.read(self.log, complete=complete)

    async def until(
        self, condition: Callable[[], Awaitable[bool]], *, timeout: float, what: str
    ) -> None:
        """Poll ``condition`` until it holds; fail after ``timeout`` s or if a child dies."""
        deadline = time.monotonic() + timeout
        while not await condition():
            self.children.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what}\n" + self.outputs())
            await asyncio.sleep(0.02)

    def outputs(self) -> str:
        return self.children.outputs()

    async def enqueue_records(self, count: int, pause: float) -> list[str]:
        """``count`` record jobs, in transactions of 1,000; returns their ids."""
        ids: list[str] = []
        for start in range(0, count, 1000):
            batch = min(1000, count - start)
            jobs = await self.tasks.record.asend_many([((pause,), {})] * batch)
            ids.extend(job.id for job in jobs)
        assert len(set(ids)) == count
        return ids

    async def statuses(self, job_ids: list[str]) -> Counter[JobStatus]:
        """Each job's status, read one by one through the public API."""
        return Counter([(await self.client.ajob(job_id)).status for job_id in job_ids])

    async def attempts(self, job_ids: list[str]) -> dict[str, int]:
        return {job_id: (await self.client.ajob(job_id)).attempts for job_id in job_ids}

    async def workers(self) -> list[WorkerInfo]:
        """The worker registry: every worker that heartbeats and has not stopped."""
        return await self.client.aworkers()

    async def all_ran(self, job_ids: list[str]) -> bool:
        """Every job is in the log and nothing is left in the queue."""
        if not self.runs().job_ids() >= set(job_ids):
            return False
        return (await self.broker.queue_stats(QUEUE)).depth == 0

    async def stop(self, child: Child, *, within: float) -> float:
        """SIGTERM ``child`` and check it exits 0 within ``within`` s; returns how long it took."""
        sent = time.monotonic()
        child.signal(signal.SIGTERM)
        code = await child.exit_code(within)
        took = time.monotonic() - sent
        assert code == 0, child.output()
        return took


@pytest.fixture
async def setting(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setting]:
    """The workers' broker: a SQLite file, or (parametrized indirectly) another backend of
    tests/backend_urls.py."""
    url = BACKENDS[getattr(request, "param", "sqlite")](tmp_path)
    log = tmp_path / "runs.log"
    environment = {**os.environ, URL_ENV: url, LOG_ENV: str(log)}
    children = Children(tmp_path, environment)
    client = App(url, lease_timeout=LEASE_TIMEOUT)
    tasks = register(client)
    try:
        broker = await client.abroker()
        yield Setting(url, log, client, tasks, broker, children)
    finally:
        await children.kill_all()
        await client.aclose()
        client.close()  # the private loop that reading job.status opened


# 1. SIGKILL

TOTAL = 10_000
CONCURRENCY = 8
PREFETCH = 50
IN_FLIGHT_BOUND = PREFETCH + CONCURRENCY


@pytest.mark.parametrize("setting", ["sqlite", "redis"], indirect=True)
@pytest.mark.parametrize("kill_at", [0.1, 0.5, 0.9], ids=["at-10%", "at-50%", "at-90%"])
async def test_sigkilled_worker_loses_no_task(setting: Setting, kill_at: float) -> None:
    job_ids = await setting.enqueue_records(TOTAL, pause=0.002)
    options = ("--concurrency", str(CONCURRENCY), "--prefetch", str(PREFETCH))
    first = await setting.children.worker("first", *options)

    async def at_kill_point() -> bool:
        return len(setting.runs()) >= TOTAL * kill_at

    await setting.until(at_kill_point, timeout=30, what=f"{kill_at:.0%} of the runs")
    first.signal(signal.SIGKILL)
    assert await first.exit_code(5) == -signal.SIGKILL
    ran_before_kill = setting.runs(complete=True)
    assert len(ran_before_kill) < TOTAL, "the worker finished before it was killed"
    assert ran_before_kill.pids() == {first.pid}

    second = await setting.children.worker("second", *options)
    await setting.until(lambda: setting.all_ran(job_ids), timeout=40, what="every job to run")
    await setting.stop(second, within=10)

    runs = setting.runs(complete=True)
    assert runs.job_ids() == set(job_ids), "a job never ran, or a run is not ours"
    assert await setting.statuses(job_ids) == {JobStatus.SUCCEEDED: TOTAL}
    stats = await setting.broker.queue_stats(QUEUE)
    assert (stats.ready, stats.delayed, stats.unacked) == (0, 0, 0)
    assert (await setting.broker.queue_stats(dead_letter_queue(QUEUE))).depth == 0

    # Only the jobs the killed worker held (leased, running or run but not yet settled)
    # come back, and those are the only ones that may run twice: once in each worker.
    attempts = await setting.attempts(job_ids)
    redelivered = {job_id for job_id, n in attempts.items() if n > 1}
    assert set(attempts.values()) <= {1, 2}, Counter(attempts.values())
    assert redelivered, "no job was in flight when the worker was killed"
    assert len(redelivered) <= IN_FLIGHT_BOUND, f"{len(redelivered)} jobs came back"
    duplicates = runs.duplicates()
    assert set(duplicates) <= redelivered, "a job ran twice without being redelivered"
    assert sum(n - 1 for n in duplicates.values()) <= IN_FLIGHT_BOUND
    pids_by_job = runs.pids_by_job()
    for job_id in duplicates:
        assert sorted(pids_by_job[job_id]) == sorted([first.pid, second.pid]), job_id
    ran_in_second = {job_id for job_id, pid in runs.entries if pid == second.pid}
    assert ran_in_second == set(job_ids) - ran_before_kill.job_ids() | set(duplicates)


@pytest.mark.parametrize("setting", ["sqlite", "redis"], indirect=True)
async def test_two_live_workers_run_each_job_exactly_once(setting: Setting) -> None:
    # No crash, so no job may run twice, even when a worker holds jobs it has leased ahead
    # for longer than the lease (here 0.25 s jobs, 20 leased per process, 2 at a time).
    total = 80
    job_ids = await setting.enqueue_records(total, pause=0.25)
    options = ("--concurrency", "2", "--prefetch", "20")
    workers = [await setting.children.worker(f"worker-{i}", *options) for i in range(2)]
    await setting.until(lambda: setting.all_ran(job_ids), timeout=40, what="every job to run")
    for worker in workers:
        await setting.stop(worker, within=10)
    runs = setting.runs(complete=True)
    assert runs.duplicates() == {}, f"{len(runs.duplicates())} jobs ran twice without a crash"
    assert runs.counts() == Counter(job_ids)
    assert await setting.statuses(job_ids) == {JobStatus.SUCCEEDED: total}


# 1b. SIGSTOP past the lease, then SIGCONT

PAUSED_TOTAL = 200


@pytest.mark.parametrize("setting", ["sqlite", "redis"], indirect=True)
async def test_a_worker_paused_past_its_leases_starts_none_of_the_jobs_it_held(
    setting: Setting,
) -> None:
    # One thread and a deep prefetch: the worker holds a long chunk of jobs in hand, and
    # the ones it had not started when paused were given to the second worker meanwhile.
    job_ids = await setting.enqueue_records(PAUSED_TOTAL, pause=0.03)
    options = ("--concurrency", "1", "--prefetch", "50")
    first = await setting.children.worker("first", *options)

    async def running() -> bool:
        return len(setting.runs()) >= 10

    await setting.until(running, timeout=30, what="the first worker to run jobs")
    first.signal(signal.SIGSTOP)
    before_pause = {job_id for job_id, _ in setting.runs().entries}
    second = await setting.children.worker("second", *options)
    await asyncio.sleep(LEASE_TIMEOUT * 3)  # the paused worker's leases lapse
    first.signal(signal.SIGCONT)
    await setting.until(lambda: setting.all_ran(job_ids), timeout=60, what="every job to run")
    await setting.stop(first, within=10)
    await setting.stop(second, within=10)

    runs = setting.runs(complete=True)
    assert runs.job_ids() == set(job_ids)
    assert await setting.statuses(job_ids) == {JobStatus.SUCCEEDED: PAUSED_TOTAL}
    attempts = await setting.attempts(job_ids)
    assert any(n > 1 for n in attempts.values()), "no lease lapsed during the pause"
    # A job runs twice only if the paused worker had started it: it was running when the
    # pause came (one thread: at most one) or had run and was not yet settled.
    started_after_pause = set(runs.duplicates()) - before_pause
    assert len(started_after_pause) <= 1, sorted(started_after_pause)


# 2. SIGTERM: a graceful stop


async def test_sigterm_drains_gracefully_without_loss_or_duplicates(setting: Setting) -> None:
    total, grace = 2_000, 10.0
    job_ids = await setting.enqueue_records(total, pause=0.002)
    options = ("--concurrency", str(CONCURRENCY), "--prefetch", str(PREFETCH))
    first = await setting.children.worker("first", *options, "--grace", str(grace))

    async def a_quarter_ran() -> bool:
        return len(setting.runs()) >= total // 4

    await setting.until(a_quarter_ran, timeout=30, what="a quarter of the runs")
    took = await setting.stop(first, within=grace + 10)
    assert took < grace, f"the graceful stop took {took:.1f}s, past the {grace}s grace"

    ran = setting.runs(complete=True)
    assert ran.duplicates() == {}
    assert len(ran) < total, "the worker finished everything before the SIGTERM"
    ran_ids = ran.job_ids()
    left = [job_id for job_id in job_ids if job_id not in ran_ids]
    # whatever ran was settled before the exit, and the rest was given back at once
    assert await setting.statuses(sorted(ran_ids)) == {JobStatus.SUCCEEDED: len(ran_ids)}
    assert await setting.statuses(left) == {JobStatus.QUEUED: len(left)}
    stats = await setting.broker.queue_stats(QUEUE)
    assert (stats.ready, stats.delayed, stats.unacked) == (len(left), 0, 0)

    second = await setting.children.worker("second", *options)
    await setting.until(lambda: setting.all_ran(job_ids), timeout=30, what="every job to run")
    await setting.stop(second, within=10)
    runs = setting.runs(complete=True)
    assert runs.counts() == Counter(job_ids), "a job was lost or ran more than once"
    assert {job_id for job_id, pid in runs.entries if pid == first.pid} == ran_ids
    assert await setting.statuses(job_ids) == {JobStatus.SUCCEEDED: total}


async def test_jobs_a_graceful_stop_gives_back_keep_their_attempts(setting: Setting) -> None:
    # A stopping worker gives back the jobs it leased ahead but never started. None of their
    # attempts ran, so none may be used up: a task allowed one attempt must still run once.
    total = 400
    jobs = await setting.tasks.record_once.asend_many([((0.005,), {})] * total)
    job_ids = [job.id for job in jobs]
    options = ("--concurrency", "2", "--prefetch", str(PREFETCH))
    first = await setting.children.worker("first", *options)

    async def some_ran() -> bool:
        return len(setting.runs()) >= 100

    await setting.until(some_ran, timeout=15, what="the first runs")
    await setting.stop(first, within=10)
    # the lifetime counters are exact once the only receiver has closed
    delivered = (await setting.broker.queue_stats(QUEUE)).delivered
    assert delivered is not None
    given_back = delivered - len(setting.runs(complete=True))
    assert given_back > 0, "the stop gave no job back: nothing to check"

    second = await setting.children.worker("second", *options)

    async def queue_empty() -> bool:
        return (await setting.broker.queue_stats(QUEUE)).depth == 0

    await setting.until(queue_empty, timeout=30, what="the queue to empty")
    await setting.stop(second, within=10)
    dead = await setting.client.adead_letters(QUEUE, limit=total)
    assert dead == [], (
        f"{len(dead)} of the {given_back} jobs given back were dead-lettered unrun: "
        f"{dead[0].error_message}"
    )
    assert setting.runs(complete=True).counts() == Counter(job_ids)
    assert await setting.statuses(job_ids) == {JobStatus.SUCCEEDED: total}


@pytest.mark.parametrize("kind", ["thread", "async"])
async def test_graceful_stop_waits_only_for_the_jobs_already_running(
    setting: Setting, kind: str
) -> None:
    # One job runs at a time (--concurrency 1); the other leased ones have not started, so a
    # stop lets that one finish and gives the rest back at once, whatever the prefetch.
    count, seconds = 10, 0.4
    task = setting.tasks.sleeper if kind == "thread" else setting.tasks.async_sleeper
    await task.asend_many([((seconds,), {})] * count)
    options = ("--concurrency", "1", "--prefetch", str(count), "--grace", "30")
    worker = await setting.children.worker("worker", *options)

    async def one_started() -> bool:
        return len(setting.runs()) >= 1

    await setting.until(one_started, timeout=15, what="the first job to start")
    took = await setting.stop(worker, within=40)
    started = len(setting.runs(complete=True))
    assert started <= 2, f"{started} of {count} jobs ran: the stop waited for unstarted ones"
    assert took < 2 * seconds + 1, f"the stop took {took:.1f}s"
    stats = await setting.broker.queue_stats(QUEUE)
    assert (stats.ready, stats.unacked) == (count - started, 0)


# 3. A second signal


@pytest.mark.parametrize("kind", ["thread", "async"])
async def test_second_signal_releases_leases_at_once(setting: Setting, kind: str) -> None:
    task = setting.tasks.sleeper if kind == "thread" else setting.tasks.async_sleeper
    job = await task.asend([30.0])
    worker = await setting.children.worker("worker", "--grace", "60")

    async def started() -> bool:
        return job.id in setting.runs().job_ids()

    await setting.until(started, timeout=15, what="the task to start")
    worker.signal(signal.SIGTERM)
    await asyncio.sleep(0.5)  # signals of one kind do not queue: let the first be handled
    assert worker.process.returncode is None, "the first SIGTERM did not wait out the grace"
    assert (await job.arefresh()).status is JobStatus.RUNNING
    sent = time.monotonic()
    worker.signal(signal.SIGTERM)
    code = await worker.exit_code(15)
    took = time.monotonic() - sent
    assert code == 0, worker.output()
    assert took < 5, f"the worker took {took:.1f}s to exit after the second SIGTERM"
    stats = await setting.broker.queue_stats(QUEUE)
    assert (stats.ready, stats.unacked) == (1, 0), "the job's lease was not given back"
    await job.arefresh()
    assert (job.status, job.attempts) == (JobStatus.QUEUED, 0)
    assert setting.runs(complete=True).counts() == {job.id: 1}


async def test_ctrl_c_on_a_supervised_pool_lets_running_jobs_finish(setting: Setting) -> None:
    # Ctrl-C in a terminal signals every process of the foreground group (as systemd's stop
    # does its whole cgroup): each worker hears the SIGINT, and its supervisor's SIGTERM.
    # That is one stop request, and it must stay graceful.
    job = await setting.tasks.async_sleeper.asend([3.0])
    supervisor = await setting.children.worker("supervisor", "--processes", "2", "--grace", "30")

    async def started() -> bool:
        return job.id in setting.runs().job_ids()

    await setting.until(started, timeout=15, what="the task to start")
    supervisor.stopped = True
    os.killpg(supervisor.pid, signal.SIGINT)
    assert await supervisor.exit_code(20) == 0, supervisor.output()
    await job.arefresh()
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1), (
        "the running job was given back instead of finishing within the grace period"
    )
    assert setting.runs(complete=True).counts() == {job.id: 1}


# 4. Periodic tasks


@pytest.mark.parametrize("setting", ["sqlite", "redis"], indirect=True)
async def test_periodic_task_fires_once_per_tick_with_two_workers(setting: Setting) -> None:
    options = ("--queues", TICK_QUEUE, "--concurrency", "2")
    workers = [await setting.children.worker(f"worker-{i}", *options) for i in range(2)]

    async def both_registered() -> bool:
        return {info.pid for info in await setting.workers()} == {w.pid for w in workers}

    await setting.until(both_registered, timeout=15, what="both workers to register")
    await asyncio.sleep(3.0)
    for worker in workers:
        worker.signal(signal.SIGTERM)
    for worker in workers:
        assert await worker.exit_code(10) == 0, worker.output()

    runs = setting.runs(complete=True)
    assert runs.duplicates() == {}, "a tick's job ran twice"
    assert runs.pids() <= {w.pid for w in workers}
    keys = [(await setting.client.ajob(job_id)).record.idempotency_key for job_id in runs.job_ids()]
    # ticks enqueued but not run before the stop are still waiting in the queue
    waiting = await setting.broker.browse(TICK_QUEUE, limit=1000)
    keys += [queued.message.headers.get(IDEMPOTENCY_HEADER) for queued in waiting]
    prefix = "periodic:reliability.tick:"
    assert all(key and key.startswith(prefix) for key in keys), keys
    duplicated = {key: n for key, n in Counter(keys).items() if n > 1}
    assert duplicated == {}, "a tick was enqueued more than once"
    ticks = sorted(datetime.fromisoformat(str(key).removeprefix(prefix)) for key in keys)
    assert len(ticks) >= 4, ticks
    gaps = {later - earlier for earlier, later in itertools.pairwise(ticks)}
    assert gaps == {timedelta(seconds=TICK_EVERY)}, f"ticks missed or uneven: {ticks}"
    assert len(runs) >= 4, "ticks were enqueued but hardly any ran"


# 5. Autoscaling


async def test_autoscaler_scales_processes_up_with_depth_and_back_down(setting: Setting) -> None:
    # Own thresholds, a 1 s cooldown and a 0.3 s check: `conveyor worker --autoscale`
    # cannot set them, and its 30 s cooldown would make this a minute-long test.
    total = 120
    job_ids = await setting.enqueue_records(total, pause=0.2)
    supervisor = await setting.children.start(
        "supervisor",
        "-m", "tests.reliability.supervise",
        "--minimum", "1", "--maximum", "3", "--low", "4", "--high", "30",
        "--cooldown", "1.0", "--check-interval", "0.3",
        "--concurrency", "2", "--prefetch", "2", "--grace", "10",
    )  # fmt: skip
    seen: dict[int, WorkerInfo] = {}
    most = 0

    async def registered(count: int) -> bool:
        nonlocal most
        workers = await setting.workers()
        seen.update((info.pid, info) for info in workers)
        most = max(most, len(workers))
        return len(workers) == count

    await setting.until(lambda: registered(3), timeout=20, what="three worker processes")
    await setting.until(lambda: setting.all_ran(job_ids), timeout=40, what="every job to run")
    await setting.until(lambda: registered(1), timeout=15, what="the pool to shrink to one")
    assert most == 3, f"{most} workers at once with --maximum 3"
    assert supervisor.pid not in seen, "the supervisor itself took jobs"
    (remaining,) = await setting.workers()

    await setting.stop(supervisor, within=20)
    assert await setting.workers() == [], "a stopped worker is still registered"
    runs = setting.runs(complete=True)
    assert runs.counts() == Counter(job_ids), "a job was lost or ran twice while scaling"
    assert len(runs.pids()) == 3, "three processes were up, but not all of them did work"
    assert runs.pids() <= set(seen)
    assert remaining.pid in runs.pids()
    assert await setting.statuses(job_ids) == {JobStatus.SUCCEEDED: total}


async def test_cli_autoscale_starts_the_maximum_for_a_deep_queue(setting: Setting) -> None:
    # The CLI's rules: above AutoscaleRules' default high mark (500 waiting) run MAX at once.
    total = 700
    job_ids = await setting.enqueue_records(total, pause=0.05)
    supervisor = await setting.children.worker(
        "supervisor", "--autoscale", "1:3", "--concurrency", "2", "--prefetch", "2"
    )

    async def three_workers() -> bool:
        return len(await setting.workers()) == 3

    await setting.until(three_workers, timeout=20, what="three worker processes")
    pids = {info.pid for info in await setting.workers()}
    assert supervisor.pid not in pids
    await setting.stop(supervisor, within=20)
    assert await setting.workers() == []
    runs = setting.runs(complete=True)
    assert runs.duplicates() == {}
    assert runs.pids() <= pids
    stats = await setting.broker.queue_stats(QUEUE)
    assert stats.unacked == 0, "the workers kept leases after the supervisor stopped them"
    assert stats.ready == total - len(runs)
    ran = runs.job_ids()
    assert await setting.statuses(sorted(ran)) == {JobStatus.SUCCEEDED: len(ran)}
    assert set(job_ids) >= ran


# 6. Orphans: a SIGKILLed parent's processes stop by themselves


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) counts as gone
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    return False


async def _gone(pids: set[int], setting: Setting, what: str) -> None:
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} still running 30 s after their parent was killed")
        await asyncio.sleep(0.1)


async def test_workers_of_a_sigkilled_supervisor_stop_by_themselves(setting: Setting) -> None:
    supervisor = await setting.children.worker("supervisor", "--processes", "2")

    async def both_registered() -> bool:
        return len(await setting.workers()) == 2

    await setting.until(both_registered, timeout=30, what="both workers to register")
    workers = {info.pid for info in await setting.workers()}
    try:
        assert supervisor.pid not in workers
        supervisor.signal(signal.SIGKILL)  # the supervisor alone, not its workers' sessions
        await _gone(workers, setting, "the supervisor's workers")
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert await setting.workers() == [], "a worker stopped without leaving the registry"


def process_sleeper(pid_file: str, seconds: float) -> None:
    """The signature of the task of tests/reliability/app.py, to send it from here."""


async def test_the_child_of_a_process_task_stops_when_its_worker_is_sigkilled(
    setting: Setting, tmp_path: Path
) -> None:
    sleeper = setting.client.task(
        name="reliability.process_sleeper", executor="process", timeout=600
    )(process_sleeper)
    pid_file = tmp_path / "task.pid"
    await sleeper.adelay(str(pid_file), 900)
    worker = await setting.children.worker("worker")
    await setting.until(
        lambda: asyncio.sleep(0, pid_file.exists()), timeout=30, what="the task to start"
    )
    child = int(pid_file.read_text())
    try:
        assert _alive(child)
        worker.signal(signal.SIGKILL)
        assert await worker.exit_code(5) == -signal.SIGKILL
        await _gone({child}, setting, "the process task's child")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


# 7. The worker registry


async def test_worker_registry_shows_live_workers_and_forgets_stopped_ones(
    setting: Setting,
) -> None:
    stays = await setting.children.worker("stays", "--queues", f"{QUEUE},{TICK_QUEUE}")
    goes = await setting.children.worker("goes", "--queues", TICK_QUEUE, "--concurrency", "3")

    async def both_registered() -> bool:
        return {info.pid for info in await setting.workers()} == {stays.pid, goes.pid}

    await setting.until(both_registered, timeout=15, what="both workers to register")
    by_pid = {info.pid: info for info in await setting.workers()}
    now = time.time()
    for child, queues, concurrency in [
        (stays, (QUEUE, TICK_QUEUE), 8),
        (goes, (TICK_QUEUE,), 3),
    ]:
        info = by_pid[child.pid]
        assert (info.queues, info.concurrency) == (queues, concurrency), info
        assert info.host == socket.gethostname()
        assert info.id == f"{socket.gethostname()}-{child.pid}"
        assert info.started_at <= info.heartbeat_at <= now + 1
        assert now - info.heartbeat_at < 10, "a live worker's heartbeat is stale"

    await setting.stop(goes, within=10)
    assert [info.pid for info in await setting.workers()] == [stays.pid]
    await setting.stop(stays, within=10)
    assert await setting.workers() == []
