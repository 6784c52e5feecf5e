"""The ``tasks`` suite: Conveyor's task layer end to end, beside the peers in the same run.

Conveyor runs on the embedded broker (a fresh SQLite file per figure in a temporary
directory, durability normal) with its worker started as a child process by its own CLI,
``python -m conveyor worker bench.tasks_app:app --concurrency C --prefetch K``. The peers
(Celery, Dramatiq, Huey, RQ, arq on the local Redis and RabbitMQ) run the same workloads
through ``python -m bench.peers`` (see bench/peers); a peer whose server does not answer
on 127.0.0.1, or whose library is not installed (``pip install -e '.[bench]'``), is
skipped with a note.

End-to-end figures drain a pre-filled queue: a begin marker task, N no-op tasks, an end
marker task. The worker starts on the full queue; the clock runs from the moment the
begin marker ran (written by the task itself) to the parent's first 10 ms poll that sees
the end marker's file and an empty queue (``queue_stats(...).depth == 0``: nothing ready,
delayed or leased). The same rule times every peer.

``rabbitmq_e2e_per_s`` is the same drain with the same worker configuration, in two
processes as the Celery peer runs, on the local RabbitMQ with job records in the local
Redis, beside the peers that run on RabbitMQ (Celery, Dramatiq). Its queue and key prefix
are unique per run and deleted afterwards; its clock ends at the last job's outcome, once
every record has finished (``wait_rabbitmq_drained``).
Beside it, ``rabbitmq_raw_consume_per_s`` is aio-pika alone consuming and acking as many
messages in one process: what the AMQP client costs before any task layer runs.

``redis_e2e_per_s`` is the same drain again, two worker processes as the Redis peers run,
on the local Redis (database 0) as both broker and job store:
``redis://127.0.0.1:6379/0?prefix=conveyor-bench-<token>:``, every key of that prefix
deleted afterwards; the clock ends as ``rabbitmq_e2e_per_s``'s does, at the last job's
outcome. It is compared with the fastest of the peers on the same Redis in the same run
(Dramatiq, Huey, RQ, arq; ``redis_e2e_vs_fastest_peer``). While Conveyor's redis:// broker
cannot run it, the figure is skipped with one line saying why, and the peers still run.

``python -m bench tasks --only PART[,PART]`` runs some of the parts: ``embedded`` (every
figure on the embedded broker, with every peer), ``rabbitmq`` and ``redis`` (each with
the peers on that server).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import random
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from bench import tasks_app
from bench.backends import describe, raw_consume
from bench.harness import (
    DRAIN_POLL_S,
    ROOT,
    Figures,
    Stopwatch,
    Suite,
    Target,
    bench_module_command,
    per_second,
    percentile,
    progress,
    run_child,
    selected,
    terminating,
    units_of,
)
from bench.peers import (
    PEERS,
    RABBITMQ_PORT,
    RABBITMQ_URL,
    REDIS_PORT,
    REDIS_URL,
    Peer,
    delete_rabbitmq,
    delete_redis_keys,
    rabbitmq_ready,
    server_listening,
)
from conveyor.app import App
from conveyor.brokers.redis.keys import Keys
from conveyor.tasks.states import dead_letter_queue

BATCH = 100
WORKER_CONCURRENCY = 1
WORKER_PREFETCH = 500
"""The worker's configuration for every Conveyor figure: the best of the sweep
(``python -m bench.tasks sweep``) on the development machine; see docs/benchmarks.md."""
RABBITMQ_PROCESSES = 2
"""Worker processes for ``rabbitmq_e2e_per_s``, as many as the Celery peer runs: on
RabbitMQ one process is bound by the AMQP client's frame decoding (see
``rabbitmq_raw_consume_per_s``), where the embedded engine's one process is not."""
REDIS_PROCESSES = 2
"""Worker processes for ``redis_e2e_per_s``: as many as each Redis peer runs (Huey, RQ and
arq two workers, Dramatiq a process per core on this two-core machine)."""
REDIS_BROKER_URL = "redis://127.0.0.1:6379/0"
"""The server the Redis peers use (they keep to database 15); Conveyor's keys go to 0."""
PARTS = ("embedded", "rabbitmq", "redis")
"""The parts ``--only`` can pick; the peers run with the parts on their server."""

LATENCY_WARMUP = 20  # samples discarded: first connections, first wake-ups
LATENCY_GAP_S = (0.005, 0.010)  # idle time before each latency enqueue, drawn uniformly
LATENCY_IDLE_GAP_S = 1.0  # ... and for the after-idle samples


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each figure does (tasks unless named otherwise)."""

    e2e: int
    enqueue_single: int
    enqueue_batch: int
    latency_samples: int
    latency_idle_samples: int
    peer: int
    slow_peer: int
    rabbitmq_e2e: int
    redis_e2e: int


FULL = Sizes(
    e2e=100_000,
    enqueue_single=10_000,
    enqueue_batch=100_000,
    latency_samples=500,
    latency_idle_samples=30,
    peer=20_000,
    slow_peer=3_000,
    rabbitmq_e2e=50_000,
    redis_e2e=50_000,
)
QUICK = Sizes(
    e2e=10_000,
    enqueue_single=2_000,
    enqueue_batch=20_000,
    latency_samples=100,
    latency_idle_samples=10,
    peer=2_000,
    slow_peer=1_000,
    rabbitmq_e2e=5_000,
    redis_e2e=5_000,
)

# name -> (unit, what it measures); the order is the order of the printed table
FIGURES: dict[str, tuple[str, str]] = {
    "e2e_per_s": ("tasks/s", "drain N pre-enqueued sync no-op tasks with one worker process"),
    "e2e_async_per_s": ("tasks/s", "the same with an async def no-op"),
    "e2e_with_startup_per_s": ("tasks/s", "sync drain timed from the worker's launch instead"),
    "worker_startup_s": ("s", "worker launch -> first task running (interpreter, imports)"),
    "worker_rss_mb": ("MB", "peak RSS (VmHWM) of the worker process during the sync drain"),
    "enqueue_single_per_s": ("tasks/s", "task.delay() one call per task, no event loop"),
    "enqueue_single_async_per_s": ("tasks/s", "await task.adelay() one call per task"),
    "raw_sqlite_enqueue_per_s": (
        "tasks/s",
        "raw sqlite3 on delay()'s file: BEGIN IMMEDIATE; INSERT message; INSERT job;"
        " UPDATE the queue's counter; COMMIT",
    ),
    "enqueue_batch_per_s": ("tasks/s", f"task.send_many() of {BATCH} calls, no event loop"),
    "enqueue_batch_async_per_s": ("tasks/s", f"await task.asend_many() of {BATCH} calls"),
    "publish_batch_per_s": (
        "msg/s",
        f"await the broker's own publish_batch() of {BATCH} task messages built beforehand",
    ),
    "latency_p50_ms": ("ms", "enqueue -> task function starts, idle worker, median"),
    "latency_p99_ms": ("ms", "enqueue -> task function starts, idle worker, 99th percentile"),
    "latency_after_idle_p50_ms": ("ms", "the same after 1 s of idle before each enqueue"),
    "rabbitmq_e2e_per_s": (
        "tasks/s",
        "drain N sync no-ops with two worker processes on RabbitMQ, job records in Redis",
    ),
    "rabbitmq_raw_consume_per_s": (
        "msg/s",
        "aio-pika alone, one process: consume the same N messages with prefetch 100, ack each",
    ),
    "redis_e2e_per_s": (
        "tasks/s",
        "drain N sync no-ops with two worker processes on Redis, job records in the same Redis",
    ),
    **{
        name: (unit, f"{peer.configuration}: {what}")
        for peer in PEERS
        for name, unit, what in (
            (f"peer_{peer.name}_e2e_per_s", "tasks/s", "drain N pre-enqueued no-op tasks"),
            (f"peer_{peer.name}_enqueue_per_s", "tasks/s", "enqueue one call per task"),
        )
    },
}
RATIOS: dict[str, tuple[str, str]] = {
    "e2e_vs_fastest_peer": ("x", "e2e_per_s / the largest peer_*_e2e_per_s"),
    "e2e_async_vs_fastest_peer": ("x", "e2e_async_per_s / the largest peer_*_e2e_per_s"),
    "enqueue_single_vs_fastest_peer": (
        "x",
        "enqueue_single_per_s / the largest peer_*_enqueue_per_s",
    ),
    "enqueue_single_async_vs_fastest_peer": (
        "x",
        "enqueue_single_async_per_s / the largest peer_*_enqueue_per_s",
    ),
    "enqueue_single_vs_raw_sqlite": (
        "x",
        "enqueue_single_per_s / raw_sqlite_enqueue_per_s: delay()'s share of the bare commit",
    ),
    "raw_sqlite_enqueue_vs_fastest_peer": (
        "x",
        "raw_sqlite_enqueue_per_s / the largest peer_*_enqueue_per_s: the ceiling of the"
        " one-call enqueue ratios",
    ),
    "enqueue_batch_vs_publish_batch": (
        "x",
        "enqueue_batch_per_s / publish_batch_per_s: what send_many adds to the broker's write",
    ),
    "rabbitmq_e2e_vs_fastest_peer": (
        "x",
        "rabbitmq_e2e_per_s / the largest peer_*_e2e_per_s of the peers on RabbitMQ",
    ),
    "rabbitmq_e2e_vs_raw_consume": (
        "x",
        "rabbitmq_e2e_per_s / rabbitmq_raw_consume_per_s: the task layer's share of the client",
    ),
    "redis_e2e_vs_fastest_peer": (
        "x",
        "redis_e2e_per_s / the largest peer_*_e2e_per_s of the peers on Redis",
    ),
}

TARGETS = (
    Target("end to end >= 10x the fastest peer", "e2e_vs_fastest_peer", ">=", 10.0),
    Target("idle enqueue->start p50 <= 1 ms", "latency_p50_ms", "<=", 1.0),
    Target("idle enqueue->start p99 <= 5 ms", "latency_p99_ms", "<=", 5.0),
    Target("worker peak RSS <= 80 MB", "worker_rss_mb", "<=", 80.0),
    Target(
        "sync delay() >= 2x the fastest peer's enqueue", "enqueue_single_vs_fastest_peer", ">=", 2.0
    ),
    Target(
        "await adelay() >= 3x the fastest peer's enqueue",
        "enqueue_single_async_vs_fastest_peer",
        ">=",
        3.0,
    ),
    Target(
        "send_many >= 0.6x the broker's publish_batch", "enqueue_batch_vs_publish_batch", ">=", 0.6
    ),
)
RABBITMQ_TARGETS = (
    Target(
        "end to end on RabbitMQ >= 2x the fastest RabbitMQ peer",
        "rabbitmq_e2e_vs_fastest_peer",
        ">=",
        2.0,
    ),
)
"""Apart from ``TARGETS``, which judge the embedded broker; the suite judges both."""
REDIS_TARGETS = (
    Target(
        "end to end on Redis >= 3x the fastest Redis peer",
        "redis_e2e_vs_fastest_peer",
        ">=",
        3.0,
    ),
)


def fastest_peer(results: Mapping[str, float], suffix: str) -> float | None:
    """The largest ``peer_*<suffix>`` figure, or None when no peer was measured."""
    values = [v for k, v in results.items() if k.startswith("peer_") and k.endswith(suffix)]
    return max(values) if values else None


def ratios(results: Mapping[str, float]) -> Figures:
    """Comparisons within one run; a ratio is left out when a side is missing or zero."""
    found: Figures = {}
    for ratio, figure, suffix in (
        ("e2e_vs_fastest_peer", "e2e_per_s", "_e2e_per_s"),
        ("e2e_async_vs_fastest_peer", "e2e_async_per_s", "_e2e_per_s"),
        ("enqueue_single_vs_fastest_peer", "enqueue_single_per_s", "_enqueue_per_s"),
        ("enqueue_single_async_vs_fastest_peer", "enqueue_single_async_per_s", "_enqueue_per_s"),
        ("raw_sqlite_enqueue_vs_fastest_peer", "raw_sqlite_enqueue_per_s", "_enqueue_per_s"),
    ):
        best = fastest_peer(results, suffix)
        if figure in results and best:
            found[ratio] = results[figure] / best
    if "enqueue_single_per_s" in results and results.get("raw_sqlite_enqueue_per_s"):
        found["enqueue_single_vs_raw_sqlite"] = (
            results["enqueue_single_per_s"] / results["raw_sqlite_enqueue_per_s"]
        )
    if results.get("enqueue_batch_per_s") and results.get("publish_batch_per_s"):
        found["enqueue_batch_vs_publish_batch"] = (
            results["enqueue_batch_per_s"] / results["publish_batch_per_s"]
        )
    best_on_rabbitmq = fastest_rabbitmq_peer(results)
    if "rabbitmq_e2e_per_s" in results and best_on_rabbitmq:
        found["rabbitmq_e2e_vs_fastest_peer"] = results["rabbitmq_e2e_per_s"] / best_on_rabbitmq
    if "rabbitmq_e2e_per_s" in results and "rabbitmq_raw_consume_per_s" in results:
        found["rabbitmq_e2e_vs_raw_consume"] = (
            results["rabbitmq_e2e_per_s"] / results["rabbitmq_raw_consume_per_s"]
        )
    best_on_redis = fastest_peer_on(results, "redis")
    if "redis_e2e_per_s" in results and best_on_redis:
        found["redis_e2e_vs_fastest_peer"] = results["redis_e2e_per_s"] / best_on_redis
    return found


def fastest_peer_on(results: Mapping[str, float], backend: str) -> float | None:
    """The largest e2e figure of the peers on ``backend``, or None when none was measured."""
    values = [
        results[name]
        for peer in PEERS
        if peer.backend == backend and (name := f"peer_{peer.name}_e2e_per_s") in results
    ]
    return max(values) if values else None


def fastest_rabbitmq_peer(results: Mapping[str, float]) -> float | None:
    """The largest e2e figure of the peers on RabbitMQ, or None when none was measured."""
    return fastest_peer_on(results, "rabbitmq")


def peak_rss_mb(status: str) -> float | None:
    """VmHWM (the resident set's high-water mark) from /proc/PID/status text, in MiB."""
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == "VmHWM":
            amount, _, unit = value.strip().partition(" ")
            if unit.strip() != "kB":
                raise ValueError(f"VmHWM in {unit!r}, expected kB")
            return int(amount) / 1024
    return None


def run(quick: bool) -> Figures:
    """Measure every figure once, in a fresh temporary directory."""
    sizes = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-tasks-") as directory:
        measured = measure(Path(directory), sizes)
    return {name: measured[name] for name in FIGURES if name in measured}


def broker_url(path: Path) -> str:
    return f"sqlite:///{path}?durability=normal"


def measure(directory: Path, sizes: Sizes) -> Figures:
    """The parts ``--only`` selects (all by default), then the peers on their servers."""
    results: Figures = {}
    if selected("embedded"):
        results.update(measure_embedded(directory, sizes))
    if selected("rabbitmq"):
        results.update(measure_rabbitmq(directory / "rabbitmq", sizes))
    if selected("redis"):
        results.update(measure_redis(directory / "redis", sizes))
    results.update(measure_peers(directory / "peers", sizes, peer_backends()))
    return results


def peer_backends() -> frozenset[str]:
    """The servers whose peers this run measures: every one beside the embedded figures
    (they are compared with every peer), else those of the selected parts."""
    if selected("embedded"):
        return frozenset(peer.backend for peer in PEERS)
    return frozenset(part for part in PARTS if selected(part))


def measure_embedded(directory: Path, sizes: Sizes) -> Figures:
    """Every figure on the embedded broker: enqueueing, the drains, the latencies."""
    results: Figures = {}

    progress(f"enqueue: {sizes.enqueue_single:,} task.delay() calls, sync")
    results["enqueue_single_per_s"] = enqueue_single(directory / "single.db", sizes)
    progress(f"raw sqlite3: {sizes.enqueue_single:,} delay() transactions on the same file")
    results["raw_sqlite_enqueue_per_s"] = raw_enqueue(directory / "single.db", sizes)
    progress(f"enqueue: {sizes.enqueue_single:,} await task.adelay() calls")
    results["enqueue_single_async_per_s"] = asyncio.run(
        enqueue_single_async(directory / "single-async.db", sizes)
    )
    progress(f"enqueue: {sizes.enqueue_batch:,} tasks by send_many({BATCH}), sync")
    results["enqueue_batch_per_s"] = enqueue_batch(directory / "batch.db", sizes)
    progress(f"enqueue: {sizes.enqueue_batch:,} task messages by await publish_batch({BATCH})")
    results["publish_batch_per_s"] = asyncio.run(publish_batch(directory / "publish.db", sizes))

    config = f"--concurrency {WORKER_CONCURRENCY} --prefetch {WORKER_PREFETCH}"
    progress(f"e2e: {sizes.e2e:,} sync no-op tasks through one worker ({config})")
    drained = drain(directory, "e2e", tasks_app.NOOP, sizes.e2e)
    results["e2e_per_s"] = drained.per_s
    results["e2e_with_startup_per_s"] = drained.with_startup_per_s
    results["worker_startup_s"] = drained.startup_s
    results["worker_rss_mb"] = drained.rss_mb
    results["enqueue_batch_async_per_s"] = drained.fill_per_s
    progress(f"e2e: {drained.per_s:,.0f} tasks/s, worker peak RSS {drained.rss_mb:.1f} MB")
    progress(f"e2e: {sizes.e2e:,} async no-op tasks through one worker")
    drained_async = drain(directory, "e2e-async", tasks_app.ASYNC_NOOP, sizes.e2e)
    results["e2e_async_per_s"] = drained_async.per_s
    progress(f"e2e async: {drained_async.per_s:,.0f} tasks/s")

    progress(
        f"latency: {sizes.latency_samples:,} + {sizes.latency_idle_samples} after 1 s idle, "
        "enqueue -> start on an idle worker"
    )
    busy, idle = latency(directory / "latency.db", sizes)
    results["latency_p50_ms"] = percentile(busy, 50)
    results["latency_p99_ms"] = percentile(busy, 99)
    results["latency_after_idle_p50_ms"] = percentile(idle, 50)
    return results


# enqueueing


def enqueue_single(path: Path, sizes: Sizes) -> float:
    """``task.delay()`` per task from code without an event loop (the App's sync portal)."""
    app = tasks_app.build(broker_url(path))
    noop = app.get_task(tasks_app.NOOP)
    try:
        noop.delay()  # first use opens the broker and declares the queue
        with Stopwatch() as watch:
            for _ in range(sizes.enqueue_single):
                noop.delay()
    finally:
        app.close()
    return per_second(sizes.enqueue_single, watch.seconds)


def raw_enqueue(path: Path, sizes: Sizes) -> float:
    """The statements of one ``delay()`` with no Python around them: the next rowid read,
    a stored job message copied under a new id and the queue's lifetime counter, one
    transaction each, on the file ``delay()`` just filled (same schema, indexes and
    durability). An unkeyed job has no row of its own until it settles (schema 6)."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA synchronous = NORMAL")
        message_columns = _columns(connection, "messages")[1:]  # the rowid is assigned
        message = connection.execute(
            f"SELECT {', '.join(message_columns)} FROM messages LIMIT 1"
        ).fetchone()
        (queue_id,) = connection.execute("SELECT id FROM queues WHERE name = 'bench'").fetchone()
        insert_message = _insert_statement("messages", message_columns)
        message_id = message_columns.index("message_id")
        ids = [f"raw-{secrets.token_hex(8)}" for _ in range(sizes.enqueue_single)]
        with Stopwatch() as watch:
            for new_id in ids:
                connection.execute("BEGIN IMMEDIATE")
                connection.execute("SELECT coalesce(max(id), 0) + 1 FROM messages").fetchone()
                row = list(message)
                row[message_id] = new_id
                connection.execute(insert_message, row)
                connection.execute(
                    "UPDATE queues SET published = published + 1 WHERE id = ?", (queue_id,)
                )
                connection.execute("COMMIT")
    finally:
        connection.close()
    return per_second(sizes.enqueue_single, watch.seconds)


def _columns(connection: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]


def _insert_statement(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


async def enqueue_single_async(path: Path, sizes: Sizes) -> float:
    app = tasks_app.build(broker_url(path))
    noop = app.get_task(tasks_app.NOOP)
    try:
        await noop.adelay()
        with Stopwatch() as watch:
            for _ in range(sizes.enqueue_single):
                await noop.adelay()
    finally:
        await app.aclose()
    return per_second(sizes.enqueue_single, watch.seconds)


def enqueue_batch(path: Path, sizes: Sizes) -> float:
    app = tasks_app.build(broker_url(path))
    noop = app.get_task(tasks_app.NOOP)
    calls: list[tuple[Sequence[object], Mapping[str, object]]] = [((), {})] * BATCH
    try:
        noop.delay()
        with Stopwatch() as watch:
            for _ in range(sizes.enqueue_batch // BATCH):
                noop.send_many(calls)
    finally:
        app.close()
    return per_second(sizes.enqueue_batch // BATCH * BATCH, watch.seconds)


async def publish_batch(path: Path, sizes: Sizes) -> float:
    """The broker's own ``publish_batch`` of the messages ``send_many`` would write, built
    beforehand: the floor under ``enqueue_batch_per_s``, which also builds and records jobs."""
    app = tasks_app.build(broker_url(path))
    noop = app.get_task(tasks_app.NOOP)
    batches = [
        [noop.submission((), {}).message for _ in range(BATCH)]
        for _ in range(sizes.enqueue_batch // BATCH)
    ]
    try:
        await noop.adelay()  # declares the queue
        broker = await app.abroker()
        with Stopwatch() as watch:
            for batch in batches:
                await broker.publish_batch(batch)
    finally:
        await app.aclose()
    return per_second(len(batches) * BATCH, watch.seconds)


# end to end


@dataclass(frozen=True, slots=True)
class Drained:
    per_s: float
    with_startup_per_s: float
    startup_s: float
    rss_mb: float
    fill_per_s: float


def worker_command(concurrency: int, prefetch: int) -> list[str]:
    return bench_module_command(
        "conveyor", "worker", "bench.tasks_app:app",
        "--concurrency", str(concurrency), "--prefetch", str(prefetch),
    )  # fmt: skip


def start_worker(
    url: str, concurrency: int, prefetch: int, processes: int = 1
) -> subprocess.Popen[str]:
    env = {**os.environ, tasks_app.URL_ENV: url}
    command = worker_command(concurrency, prefetch)
    if processes > 1:
        command += ["--processes", str(processes)]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def drain(
    directory: Path,
    name: str,
    task: str,
    count: int,
    concurrency: int = WORKER_CONCURRENCY,
    prefetch: int = WORKER_PREFETCH,
) -> Drained:
    """Fill a queue (begin marker, ``count`` tasks, end marker), then time one worker on it."""
    path = directory / f"{name}.db"
    url = broker_url(path)
    app = tasks_app.build(url)
    begin, end = directory / f"{name}.begin", directory / f"{name}.end"
    fill_seconds = asyncio.run(fill(app, task, count, begin, end))
    launched = time.time()
    worker = start_worker(url, concurrency, prefetch)
    with terminating(worker, grace=30):
        done = wait_drained(app, worker, end, timeout=120 + count / 500)
        rss = peak_rss_mb(Path(f"/proc/{worker.pid}/status").read_text())
        worker.terminate()
        worker.wait(30)
    try:
        dead = app.call_sync(lambda broker: broker.queue_stats(f"{tasks_app.QUEUE}.dlq")).depth
    finally:
        app.close()
    if dead:
        raise RuntimeError(f"{dead} {name} jobs were dead-lettered")
    began = float(begin.read_text())
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return Drained(
        per_s=per_second(count, done - began),
        with_startup_per_s=per_second(count, done - launched),
        startup_s=began - launched,
        rss_mb=rss or 0.0,
        fill_per_s=per_second(count // BATCH * BATCH, fill_seconds),
    )


async def fill(app: App, task: str, count: int, begin: Path, end: Path) -> float:
    """Enqueue the markers around ``count`` calls of ``task``; seconds of the batches of 100."""
    noop = app.get_task(task)
    mark = app.get_task(tasks_app.MARK)
    calls: list[tuple[Sequence[object], Mapping[str, object]]] = [((), {})] * BATCH
    try:
        await mark.adelay(str(begin))
        with Stopwatch() as watch:
            for _ in range(count // BATCH):
                await noop.asend_many(calls)
        if rest := count % BATCH:
            await noop.asend_many(calls[:rest])
        await mark.adelay(str(end))
    finally:
        await app.aclose()
    return watch.seconds


def wait_drained(app: App, worker: subprocess.Popen[str], end: Path, timeout: float) -> float:
    """Every 10 ms: the time.time() at which the end marker has run and the queue is empty.

    Checking the marker's file first keeps the parent from counting a deep queue (about
    10 ms of index scan at 100,000 jobs) a hundred times a second while the worker drains.
    """
    deadline = time.monotonic() + timeout
    while True:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode}")
        if end.exists():
            stats = app.call_sync(lambda broker: broker.queue_stats(tasks_app.QUEUE))
            if stats.depth == 0:
                return time.time()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not drain the queue within {timeout:.0f} s")
        time.sleep(DRAIN_POLL_S)


# latency


def latency(path: Path, sizes: Sizes) -> tuple[list[float], list[float]]:
    """(ms samples 5-10 ms apart, ms samples 1 s apart), enqueue -> the task function runs.

    One worker process, idle between samples. The parent enqueues ``probe(time.time())``
    and waits for the job's result (the probe returns ``time.time()`` at its start minus
    the argument), then idles before the next one. The first 20 samples are discarded.
    """
    app = tasks_app.build(broker_url(path))
    asyncio.run(declare(app))
    worker = start_worker(broker_url(path), WORKER_CONCURRENCY, WORKER_PREFETCH)
    with terminating(worker, grace=30):
        busy = asyncio.run(
            probe(app, worker, LATENCY_WARMUP + sizes.latency_samples, LATENCY_GAP_S)
        )[LATENCY_WARMUP:]
        idle = asyncio.run(
            probe(app, worker, sizes.latency_idle_samples, (LATENCY_IDLE_GAP_S,) * 2)
        )
    return busy, idle


async def declare(app: App) -> None:
    try:
        await app.ensure_queue(await app.abroker(), tasks_app.QUEUE)
    finally:
        await app.aclose()


async def probe(
    app: App, worker: subprocess.Popen[str], count: int, gap: tuple[float, float]
) -> list[float]:
    probe_task = app.get_task(tasks_app.PROBE)
    delays: list[float] = []
    try:
        for _ in range(count):
            await asyncio.sleep(random.uniform(*gap))
            job = await probe_task.adelay(time.time())
            delays.append(float(await job.aresult(timeout=60)))
            if worker.poll() is not None:
                raise RuntimeError(f"the latency worker exited with {worker.returncode}")
    finally:
        await app.aclose()
    return delays


# end to end on RabbitMQ


def measure_rabbitmq(directory: Path, sizes: Sizes) -> Figures:
    """``rabbitmq_e2e_per_s``, or nothing with a note when RabbitMQ or Redis is not here."""
    for server, port in (("RabbitMQ", RABBITMQ_PORT), ("Redis", REDIS_PORT)):
        if not server_listening("127.0.0.1", port):
            progress(f"rabbitmq e2e: skipped, nothing listens on 127.0.0.1:{port} ({server})")
            return {}
    config = (
        f"--concurrency {WORKER_CONCURRENCY} --prefetch {WORKER_PREFETCH} "
        f"--processes {RABBITMQ_PROCESSES}"
    )
    progress(f"rabbitmq e2e: {sizes.rabbitmq_e2e:,} sync no-op tasks ({config})")
    directory.mkdir(parents=True, exist_ok=True)
    per_s = drain_rabbitmq(directory, tasks_app.NOOP, sizes.rabbitmq_e2e)
    progress(f"rabbitmq e2e: {per_s:,.0f} tasks/s")
    name = f"bench-raw-consume-{secrets.token_hex(4)}"
    raw_per_s = per_second(sizes.rabbitmq_e2e, asyncio.run(raw_consume(name, sizes.rabbitmq_e2e)))
    progress(f"rabbitmq raw consume (aio-pika): {raw_per_s:,.0f} msg/s")
    return {"rabbitmq_e2e_per_s": per_s, "rabbitmq_raw_consume_per_s": raw_per_s}


def drain_rabbitmq(
    directory: Path,
    task: str,
    count: int,
    concurrency: int = WORKER_CONCURRENCY,
    prefetch: int = WORKER_PREFETCH,
) -> float:
    """Tasks per second of the worker draining ``count`` calls of ``task`` on RabbitMQ.

    The same fill as ``drain``, from the begin marker to the last outcome (see
    ``wait_rabbitmq_drained``); the queue and the Redis key prefix hold a random token,
    and are deleted afterwards however the drain ends.
    """
    token = secrets.token_hex(4)
    queue = f"bench-conveyor-{token}"
    prefix = f"conveyor-bench-{token}:"
    results_url = f"{REDIS_URL}?prefix={prefix}"
    app = tasks_app.build_rabbitmq(RABBITMQ_URL, results_url, queue)
    begin, end = directory / f"rabbitmq-{token}.begin", directory / f"rabbitmq-{token}.end"
    try:
        asyncio.run(fill(app, task, count, begin, end))
        worker = start_rabbitmq_worker(results_url, queue, concurrency, prefetch)
        with terminating(worker, grace=30):
            done = wait_rabbitmq_drained(worker, prefix, count, timeout=120 + count / 500)
            worker.terminate()
            worker.wait(30)
        if dead := rabbitmq_ready(dead_letter_queue(queue)):
            raise RuntimeError(f"{dead} RabbitMQ jobs were dead-lettered")
    finally:
        delete_rabbitmq([queue, dead_letter_queue(queue)], [])
        delete_redis_keys(token)
    return per_second(count, done - float(begin.read_text()))


def start_rabbitmq_worker(
    results_url: str, queue: str, concurrency: int, prefetch: int
) -> subprocess.Popen[str]:
    """``python -m conveyor worker bench.tasks_app:rabbitmq_app`` on this run's queue."""
    env = {
        **os.environ,
        tasks_app.RABBITMQ_URL_ENV: RABBITMQ_URL,
        tasks_app.RESULTS_URL_ENV: results_url,
        tasks_app.QUEUE_ENV: queue,
    }
    command = [*worker_command(concurrency, prefetch), "--processes", str(RABBITMQ_PROCESSES)]
    command[command.index("bench.tasks_app:app")] = "bench.tasks_app:rabbitmq_app"
    return subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, text=True)


def wait_rabbitmq_drained(
    worker: subprocess.Popen[str], prefix: str, count: int, timeout: float, url: str = REDIS_URL
) -> float:
    """Every 10 ms until every task has finished: then the time.time() of the last outcome.

    With two worker processes the end marker can run while the other process still holds
    prefetched tasks, which a ready count (the RabbitMQ peers' rule) does not see. The job
    records do: a finished record joins ``{prefix}expiring``, and ``{prefix}jobs`` is
    scored by each record's last update, written by the worker as it settles.
    """
    import redis

    keys = Keys(prefix)
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url)
    try:
        while True:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}")
            if cast("int", client.zcard(keys.expiring)) >= count + 2:
                latest = cast(
                    "list[tuple[bytes, float]]", client.zrevrange(keys.jobs, 0, 0, withscores=True)
                )
                return latest[0][1]
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not finish within {timeout:.0f} s")
            time.sleep(DRAIN_POLL_S)
    finally:
        client.close()


# end to end on Redis


def measure_redis(directory: Path, sizes: Sizes) -> Figures:
    """``redis_e2e_per_s``, or nothing with a note when Redis is not here or Conveyor's
    redis:// backend cannot run the drain (the peers run either way)."""
    if not server_listening("127.0.0.1", REDIS_PORT):
        progress(f"redis e2e: skipped, nothing listens on 127.0.0.1:{REDIS_PORT} (Redis)")
        return {}
    config = (
        f"--concurrency {WORKER_CONCURRENCY} --prefetch {WORKER_PREFETCH} "
        f"--processes {REDIS_PROCESSES}"
    )
    progress(f"redis e2e: {sizes.redis_e2e:,} sync no-op tasks ({config})")
    directory.mkdir(parents=True, exist_ok=True)
    try:
        per_s = drain_redis(directory, tasks_app.NOOP, sizes.redis_e2e)
    except Exception as exc:
        progress(redis_skip_line(describe(exc)))
        return {}
    progress(f"redis e2e: {per_s:,.0f} tasks/s")
    return {"redis_e2e_per_s": per_s}


def redis_skip_line(reason: str) -> str:
    return f"redis e2e: skipped, Conveyor's redis:// backend failed the drain ({reason})"


def redis_app_url(prefix: str) -> str:
    """The App's broker (and, being Redis, its job store) on this run's key prefix."""
    return f"{REDIS_BROKER_URL}?prefix={prefix}"


def drain_redis(
    directory: Path,
    task: str,
    count: int,
    concurrency: int = WORKER_CONCURRENCY,
    prefetch: int = WORKER_PREFETCH,
) -> float:
    """Tasks per second of two worker processes draining ``count`` calls of ``task`` on
    Redis: the fill of ``drain``, from the begin marker to the last outcome (the rule of
    ``wait_rabbitmq_drained``: with two processes the queue can look empty while the other
    still runs prefetched jobs). The key prefix holds a random token; its keys are deleted
    afterwards however the drain ends."""
    token = secrets.token_hex(4)
    prefix = f"conveyor-bench-{token}:"
    url = redis_app_url(prefix)
    app = tasks_app.build(url)
    begin, end = directory / f"redis-{token}.begin", directory / f"redis-{token}.end"
    try:
        asyncio.run(fill(app, task, count, begin, end))
        worker = start_worker(url, concurrency, prefetch, REDIS_PROCESSES)
        with terminating(worker, grace=30):
            done = wait_rabbitmq_drained(
                worker, prefix, count, timeout=120 + count / 500, url=REDIS_BROKER_URL
            )
            worker.terminate()
            worker.wait(30)
        try:
            dead = app.call_sync(
                lambda broker: broker.queue_stats(dead_letter_queue(tasks_app.QUEUE))
            ).depth
        finally:
            app.close()
        if dead:
            raise RuntimeError(f"{dead} Redis jobs were dead-lettered")
    finally:
        delete_redis_keys(prefix, url=REDIS_BROKER_URL)
    return per_second(count, done - float(begin.read_text()))


# peers


def measure_peers(
    directory: Path, sizes: Sizes, backends: frozenset[str] = frozenset(("redis", "rabbitmq"))
) -> Figures:
    """Each peer on one of ``backends`` with a server and its library, in a child process;
    skipped with a note."""
    results: Figures = {}
    for peer in PEERS:
        if peer.backend not in backends:
            continue
        if (reason := peer_missing(peer)) is not None:
            progress(f"peer {peer.name}: skipped, {reason}")
            continue
        count = sizes.slow_peer if peer.slow else sizes.peer
        progress(f"peer {peer.name}: {count:,} tasks ({peer.configuration})")
        command = bench_module_command("bench.peers", peer.name, str(count), str(directory))
        child = run_child(command, timeout=300 + count / 50)
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        results[f"peer_{peer.name}_e2e_per_s"] = float(figures["e2e_per_s"])
        results[f"peer_{peer.name}_enqueue_per_s"] = float(figures["enqueue_per_s"])
        progress(
            f"peer {peer.name}: e2e {figures['e2e_per_s']:,.0f}/s, enqueue "
            f"{figures['enqueue_per_s']:,.0f}/s, worker start-up {figures['startup_s']:.2f} s"
        )
    return results


def peer_missing(peer: Peer) -> str | None:
    """Why a peer cannot run here (library not installed, server not listening), or None."""
    if importlib.util.find_spec(peer.library) is None:
        return f"{peer.library} is not installed (pip install -e '.[bench]')"
    if not server_listening("127.0.0.1", peer.port):
        return f"nothing listens on 127.0.0.1:{peer.port} ({peer.backend})"
    return None


# the worker's configuration


SWEEP_CONCURRENCY = (1, 2, 4, 8)
SWEEP_PREFETCH = (100, 200, 500, 1000)


def sweep(count: int) -> None:
    """Drain ``count`` sync no-ops with each worker configuration; print a line per config."""
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-sweep-") as directory:
        for concurrency in SWEEP_CONCURRENCY:
            for prefetch in SWEEP_PREFETCH:
                for task in (tasks_app.NOOP, tasks_app.ASYNC_NOOP):
                    name = f"sweep-{concurrency}-{prefetch}-{task.rsplit('.', 1)[-1]}"
                    drained = drain(Path(directory), name, task, count, concurrency, prefetch)
                    print(
                        f"{task:12} concurrency {concurrency}  prefetch {prefetch:4}  "
                        f"{drained.per_s:9,.0f} tasks/s  RSS {drained.rss_mb:5.1f} MB",
                        flush=True,
                    )


SUITE = Suite(
    name="tasks",
    description="Conveyor's task layer end to end on the embedded broker, beside the peers",
    run=run,
    ratios=ratios,
    targets=(*TARGETS, *RABBITMQ_TARGETS, *REDIS_TARGETS),
    units=units_of(FIGURES, RATIOS),
    parts=PARTS,
)


def child_main(argv: list[str]) -> None:
    """``python -m bench.tasks sweep [COUNT]``: try worker configurations."""
    match argv:
        case ["sweep"]:
            sweep(30_000)
        case ["sweep", count]:
            sweep(int(count))
        case _:
            raise SystemExit("usage: python -m bench.tasks sweep [COUNT]")


if __name__ == "__main__":
    child_main(sys.argv[1:])
