"""The ``queues`` suite: the embedded broker's queue path beside raw sqlite3 on the same disk.

Every measurement runs in its own fresh database file in a temporary directory, with the
embedded broker at durability "normal" (WAL, synchronous=NORMAL), the setting the raw
sqlite3 baseline uses too. Figures that need an isolated process (cross-process latency,
peak memory) run in a child started as ``python -m bench.queues CHILD ARGS``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import (
    ROOT,
    Figures,
    Stopwatch,
    Suite,
    Target,
    bench_module_command,
    expect_line,
    per_second,
    percentile,
    progress,
    run_child,
    terminating,
    units_of,
    wait_for_waiter,
)
from conveyor import Broker, Message, QueueSpec, open_broker
from conveyor.brokers.embedded.rows import INSERT_MESSAGE
from conveyor.brokers.embedded.schema import MIGRATIONS

QUEUE = "bench"
BODY_SIZE = 100
BODY = os.urandom(BODY_SIZE)
BATCH = 100
STOP = b"stop"

LATENCY_WARMUP = 20  # samples discarded: first connections, first wake-ups
LATENCY_GAP_S = (0.005, 0.010)  # idle time before each latency publish, drawn uniformly
CYCLE_WARMUP = 2_000  # messages through the cycle before the timed part


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each figure does (messages unless named otherwise)."""

    publish_single: int
    publish_batch: int
    consume: int
    latency_samples: int
    shallow_depth: int
    deep_depth: int
    cycle_messages: int


FULL = Sizes(
    publish_single=20_000,
    publish_batch=200_000,
    consume=200_000,
    latency_samples=1_000,
    shallow_depth=1_000,
    deep_depth=1_000_000,
    cycle_messages=100_000,
)
QUICK = Sizes(
    publish_single=5_000,
    publish_batch=50_000,
    consume=50_000,
    latency_samples=200,
    shallow_depth=1_000,
    deep_depth=200_000,
    cycle_messages=20_000,
)

# name -> (unit, what it measures); the order is the order of the printed table
FIGURES: dict[str, tuple[str, str]] = {
    "publish_single_per_s": ("msg/s", "await broker.publish(Message) one at a time"),
    "raw_sqlite_insert_single_per_s": ("msg/s", "raw sqlite3: BEGIN IMMEDIATE; INSERT; COMMIT"),
    "publish_batch_per_s": ("msg/s", f"publish_batch of {BATCH} messages per call"),
    "raw_sqlite_insert_batch_per_s": ("msg/s", f"raw sqlite3: {BATCH} rows per transaction"),
    "consume_ack_per_s": ("msg/s", f"receive(max_messages={BATCH}) + ack_many until drained"),
    "latency_p50_ms": ("ms", "idle publish -> receive in another process, median"),
    "latency_p99_ms": ("ms", "idle publish -> receive in another process, 99th percentile"),
    "rate_shallow_per_s": ("msg/s", "publish_batch+receive+ack_many cycles, 1,000 queued"),
    "rate_deep_per_s": ("msg/s", "the same cycles with the deep queue (1,000,000; quick 200,000)"),
    "rss_shallow_mb": ("MB", "peak RSS of the process running the shallow cycles"),
    "rss_deep_mb": ("MB", "peak RSS of the process running the deep cycles"),
}
RATIOS: dict[str, tuple[str, str]] = {
    "publish_single_vs_raw_sqlite": ("x", "publish_single_per_s / raw_sqlite_insert_single_per_s"),
    "publish_batch_vs_raw_sqlite": ("x", "publish_batch_per_s / raw_sqlite_insert_batch_per_s"),
    "rate_deep_vs_shallow": ("x", "rate_deep_per_s / rate_shallow_per_s"),
    "rss_deep_vs_shallow": ("x", "rss_deep_mb / rss_shallow_mb"),
    "rss_deep_minus_shallow_mb": ("MB", "rss_deep_mb - rss_shallow_mb"),
}

TARGETS = (
    Target(
        "single publish >= 50% of raw sqlite, 1 row/txn", "publish_single_vs_raw_sqlite", ">=", 0.5
    ),
    Target("batch publish >= 100,000 msg/s", "publish_batch_per_s", ">=", 100_000),
    Target("consume + ack >= 50,000 msg/s", "consume_ack_per_s", ">=", 50_000),
    Target("idle latency p50 <= 2 ms", "latency_p50_ms", "<=", 2.0),
    Target("idle latency p99 <= 10 ms", "latency_p99_ms", "<=", 10.0),
    Target("rate at depth >= 80% of shallow", "rate_deep_vs_shallow", ">=", 0.8),
    Target(
        "RSS independent of depth (deep <= +10% or +5 MB)",
        "rss_deep_vs_shallow",
        "<=",
        1.10,
        alternative=("rss_deep_minus_shallow_mb", "<=", 5.0),
    ),
)


def ratios(results: Mapping[str, float]) -> Figures:
    """Comparisons within one run; a ratio is left out when a side is missing or zero."""

    def ratio(top: str, bottom: str) -> float | None:
        if top in results and results.get(bottom):
            return results[top] / results[bottom]
        return None

    found: dict[str, float | None] = {
        "publish_single_vs_raw_sqlite": ratio(
            "publish_single_per_s", "raw_sqlite_insert_single_per_s"
        ),
        "publish_batch_vs_raw_sqlite": ratio(
            "publish_batch_per_s", "raw_sqlite_insert_batch_per_s"
        ),
        "rate_deep_vs_shallow": ratio("rate_deep_per_s", "rate_shallow_per_s"),
        "rss_deep_vs_shallow": ratio("rss_deep_mb", "rss_shallow_mb"),
    }
    if "rss_deep_mb" in results and "rss_shallow_mb" in results:
        found["rss_deep_minus_shallow_mb"] = results["rss_deep_mb"] - results["rss_shallow_mb"]
    return {name: value for name, value in found.items() if value is not None}


def run(quick: bool) -> Figures:
    """Measure every figure once, in a fresh temporary directory."""
    sizes = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as directory:
        measured = measure(Path(directory), sizes)
    return {name: measured[name] for name in FIGURES if name in measured}


def broker_url(path: Path) -> str:
    return f"sqlite:///{path}?durability=normal"


def new_message() -> Message:
    return Message(BODY, routing_key=QUEUE)


def measure(directory: Path, sizes: Sizes) -> Figures:
    """Each figure in its own database file; each raw baseline right before its peer."""
    results: Figures = {}

    progress(f"raw sqlite3: {sizes.publish_single:,} one-row transactions")
    results["raw_sqlite_insert_single_per_s"] = raw_insert(
        directory / "raw-single.db", sizes.publish_single, per_transaction=1
    )
    progress(f"publish: {sizes.publish_single:,} single publishes")
    results["publish_single_per_s"] = asyncio.run(
        publish_single(directory / "single.db", sizes.publish_single)
    )

    progress(f"raw sqlite3: {sizes.publish_batch:,} rows, {BATCH} per transaction")
    results["raw_sqlite_insert_batch_per_s"] = raw_insert(
        directory / "raw-batch.db", sizes.publish_batch, per_transaction=BATCH
    )
    progress(f"publish_batch: {sizes.publish_batch:,} messages, {BATCH} per call")
    results["publish_batch_per_s"] = asyncio.run(
        publish_batch(directory / "batch.db", sizes.publish_batch)
    )

    progress(f"consume + ack: draining {sizes.consume:,} messages")
    results["consume_ack_per_s"] = asyncio.run(consume_ack(directory / "consume.db", sizes.consume))

    progress(f"latency: {sizes.latency_samples:,} idle publishes to a consumer process")
    delays = latency(directory / "latency.db", sizes.latency_samples)
    results["latency_p50_ms"] = percentile(delays, 50)
    results["latency_p99_ms"] = percentile(delays, 99)

    for name, depth in (("shallow", sizes.shallow_depth), ("deep", sizes.deep_depth)):
        rate, rss = cycles_at_depth(directory / f"{name}.db", name, depth, sizes.cycle_messages)
        results[f"rate_{name}_per_s"] = rate
        results[f"rss_{name}_mb"] = rss
    return results


# the raw sqlite3 baseline

# The engine's own messages table and indexes, so the baseline does the same SQL work.
RAW_SCHEMA = tuple(
    statement for statement in MIGRATIONS[0] if " messages" in statement.split("(")[0]
)
RAW_INSERT = INSERT_MESSAGE


def raw_connection(path: Path) -> sqlite3.Connection:
    """A connection set up as the engine's at durability normal, on a messages table like its."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    for statement in RAW_SCHEMA:
        connection.execute(statement)
    return connection


def raw_row() -> tuple[Any, ...]:
    now = time.time()
    now_ms = int(now * 1000)
    message_id = secrets.token_hex(12)
    return (
        1,
        0,
        now_ms,
        None,
        now_ms,
        BODY_SIZE,
        message_id,
        "",
        QUEUE,
        now,
        None,
        None,
        None,
        BODY,
        0,
    )


def raw_insert(path: Path, count: int, *, per_transaction: int) -> float:
    """Rows per second inserting ``count`` rows, ``per_transaction`` per BEGIN IMMEDIATE/COMMIT."""
    connection = raw_connection(path)
    try:
        with Stopwatch() as watch:
            for _ in range(count // per_transaction):
                connection.execute("BEGIN IMMEDIATE")
                if per_transaction == 1:
                    connection.execute(RAW_INSERT, raw_row())
                else:
                    connection.executemany(RAW_INSERT, [raw_row() for _ in range(per_transaction)])
                connection.execute("COMMIT")
    finally:
        connection.close()
    return per_second(count // per_transaction * per_transaction, watch.seconds)


# the broker


async def new_queue(path: Path) -> Broker:
    broker = open_broker(broker_url(path))
    await broker.connect()
    await broker.declare_queue(QueueSpec(QUEUE))
    return broker


async def publish_single(path: Path, count: int) -> float:
    broker = await new_queue(path)
    try:
        with Stopwatch() as watch:
            for _ in range(count):
                await broker.publish(new_message())
    finally:
        await broker.close()
    return per_second(count, watch.seconds)


async def publish_batch(path: Path, count: int) -> float:
    broker = await new_queue(path)
    try:
        with Stopwatch() as watch:
            for _ in range(count // BATCH):
                await broker.publish_batch([new_message() for _ in range(BATCH)])
    finally:
        await broker.close()
    return per_second(count // BATCH * BATCH, watch.seconds)


async def fill(broker: Broker, count: int, label: str) -> None:
    """Put ``count`` messages in the queue with publish_batch, reporting progress if long."""
    step = max(count // 5, 100_000)
    done = 0
    while done < count:
        size = min(BATCH, count - done)
        await broker.publish_batch([new_message() for _ in range(size)])
        done += size
        if count >= 100_000 and (done % step == 0 or done == count):
            progress(f"{label} {done:,}/{count:,}")


async def consume_ack(path: Path, count: int) -> float:
    """Messages per second draining a pre-filled queue 100 at a time, acking each batch."""
    broker = await new_queue(path)
    try:
        await fill(broker, count, "filling the consume queue")
        received = 0
        with Stopwatch() as watch:
            while deliveries := await broker.receive(QUEUE, max_messages=BATCH):
                await broker.ack_many(deliveries)
                received += len(deliveries)
    finally:
        await broker.close()
    if received != count:
        raise RuntimeError(f"drained {received} messages, expected {count}")
    return per_second(received, watch.seconds)


# cross-process latency


def latency(path: Path, samples: int) -> list[float]:
    """Publish-to-receive delays (ms) seen by a consumer process that was idle each time.

    The consumer waits in ``receive(wait=5)``. Before each publish the parent checks, in
    the store's ``waiters`` table, that the consumer is registered and asleep on its
    wake-up socket, lets it sleep 5-10 ms more, then publishes a message carrying
    ``time.time()``; the consumer subtracts that from ``time.time()`` on receipt.
    """
    asyncio.run(declare(path))
    command = bench_module_command("bench.queues", "latency-consumer", broker_url(path))
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    with terminating(process):
        expect_line(process, "ready", timeout=60)
        asyncio.run(publish_stamps(path, process, LATENCY_WARMUP + samples))
        stdout, _ = process.communicate(timeout=60)
    if process.returncode != 0:
        raise RuntimeError(f"the latency consumer exited with {process.returncode}")
    delays: list[float] = json.loads(stdout.strip().splitlines()[-1])["latency_ms"]
    if len(delays) != LATENCY_WARMUP + samples:
        raise RuntimeError(f"the consumer saw {len(delays)} messages, expected {samples}")
    return delays[LATENCY_WARMUP:]


async def declare(path: Path) -> None:
    broker = await new_queue(path)
    await broker.close()


async def publish_stamps(path: Path, consumer: subprocess.Popen[str], count: int) -> None:
    """Publish ``count`` timestamped messages, each to an idle consumer, then a stop."""
    broker = await new_queue(path)
    watcher = sqlite3.connect(path, isolation_level=None)
    try:
        for _ in range(count):
            try:
                async with asyncio.timeout(30):
                    await wait_for_waiter(watcher, consumer)
            except TimeoutError:
                raise RuntimeError("the latency consumer did not wait again within 30 s") from None
            await asyncio.sleep(random.uniform(*LATENCY_GAP_S))
            stamp = repr(time.time()).encode()
            await broker.publish(Message(stamp.ljust(BODY_SIZE), routing_key=QUEUE))
        await broker.publish(Message(STOP, routing_key=QUEUE))
    finally:
        watcher.close()
        await broker.close()


async def latency_consumer(url: str) -> None:
    """Child: receive with wait=5 in a loop, ack, record receive time minus publish stamp."""
    delays: list[float] = []
    idle_since = time.monotonic()
    async with open_broker(url) as broker:
        await broker.declare_queue(QueueSpec(QUEUE))
        print("ready", flush=True)
        while True:
            deliveries = await broker.receive(QUEUE, max_messages=1, wait=5)
            received = time.time()
            if not deliveries:
                if time.monotonic() - idle_since > 120:
                    raise SystemExit("latency consumer: nothing for 120 s, giving up")
                continue
            idle_since = time.monotonic()
            await broker.ack_many(deliveries)
            body = deliveries[0].message.body
            if body == STOP:
                break
            delays.append((received - float(body.decode())) * 1000)
    print(json.dumps({"latency_ms": delays}), flush=True)


# rate and memory at depth


def cycles_at_depth(path: Path, name: str, depth: int, messages: int) -> tuple[float, float]:
    """(rate, peak RSS in MB) of a child running the cycle with ``depth`` messages queued."""
    progress(f"filling the {name} queue with {depth:,} messages")
    asyncio.run(fill_queue(path, depth, f"filling {name} queue"))
    progress(f"{name} queue: {messages:,} messages through publish+receive+ack cycles")
    command = bench_module_command("bench.queues", "cycle-worker", broker_url(path), str(messages))
    if (before := stored_messages(path)) != depth:
        raise RuntimeError(f"the {name} queue holds {before:,} messages, not {depth:,}")
    child = run_child(command)
    if (after := stored_messages(path)) != depth:
        raise RuntimeError(f"the {name} queue holds {after:,} messages after the cycles")
    rate = float(json.loads(child.stdout.strip().splitlines()[-1])["rate_per_s"])
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return rate, child.peak_rss_mb


def stored_messages(path: Path) -> int:
    """Rows in the store's messages table, counted with plain sqlite3."""
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute("SELECT count(*) FROM messages").fetchone()[0])
    finally:
        connection.close()


async def fill_queue(path: Path, depth: int, label: str) -> None:
    broker = await new_queue(path)
    try:
        await fill(broker, depth, label)
    finally:
        await broker.close()


async def cycle(broker: Broker) -> int:
    """publish_batch(100), receive(100), ack_many: the steady state of a busy queue."""
    await broker.publish_batch([new_message() for _ in range(BATCH)])
    deliveries = await broker.receive(QUEUE, max_messages=BATCH)
    await broker.ack_many(deliveries)
    return len(deliveries)


async def cycle_worker(url: str, messages: int) -> None:
    """Child: warm up, then time ``messages`` messages through the cycle; print the rate."""
    async with open_broker(url) as broker:
        for _ in range(CYCLE_WARMUP // BATCH):
            await cycle(broker)
        received = 0
        with Stopwatch() as watch:
            for _ in range(messages // BATCH):
                received += await cycle(broker)
    if received != messages // BATCH * BATCH:
        raise SystemExit(f"cycle worker: received {received}, expected {messages}")
    print(json.dumps({"rate_per_s": per_second(received, watch.seconds)}), flush=True)


SUITE = Suite(
    name="queues",
    description="embedded SQLite broker queue path beside raw sqlite3",
    run=run,
    ratios=ratios,
    targets=TARGETS,
    units=units_of(FIGURES, RATIOS),
)


def child_main(argv: list[str]) -> None:
    """Entry point of the child processes: ``python -m bench.queues ROLE ARGS``."""
    match argv:
        case ["latency-consumer", url]:
            asyncio.run(latency_consumer(url))
        case ["cycle-worker", url, messages]:
            asyncio.run(cycle_worker(url, int(messages)))
        case _:
            raise SystemExit(
                "usage: python -m bench.queues latency-consumer URL | cycle-worker URL MESSAGES"
            )


if __name__ == "__main__":
    child_main(sys.argv[1:])
