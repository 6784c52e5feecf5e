"""The ``streams`` suite: the embedded broker's Kafka-style topics beside raw sqlite3 and Redis.

Every measurement runs in its own fresh database file in a temporary directory, with the
embedded broker at durability "normal" (WAL, synchronous=NORMAL), the setting the raw
sqlite3 baseline uses too. The cross-process latency runs its consumer in a child started
as ``python -m bench.streams latency-consumer URL``. Redis Streams (XADD, XREADGROUP) run
against the local server on 127.0.0.1:6379 when one answers, and are skipped with a note
otherwise.
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
    terminating,
    units_of,
    wait_for_waiter,
)
from bench.peers import server_listening
from conveyor import Broker, open_broker
from conveyor.brokers.embedded.schema import MIGRATIONS
from conveyor.brokers.stream_types import (
    Membership,
    ProducerRecord,
    Record,
    TopicConfig,
    TopicPartition,
    TopicSpec,
)

TOPIC = "bench"
PARTITIONS = 4
VALUE_SIZE = 100
VALUE = os.urandom(VALUE_SIZE)
KEY_SIZE = 16
BATCH = 1_000
STOP = b"stop"

LATENCY_TOPIC = "bench-latency"
LATENCY_WARMUP = 20  # samples discarded: first connections, first wake-ups
LATENCY_GAP_S = (0.004, 0.006)  # idle time before each latency record, drawn uniformly

REBALANCE_TOPIC = "bench-rebalance"
REBALANCE_PARTITIONS = 12
REBALANCE_GROUP = "bench"
FIRST_HEARTBEAT_S = 0.010  # the first member's heartbeat loop (it releases what it lost)
SECOND_HEARTBEAT_S = 0.001  # the joining member's heartbeat loop, until it owns its share
REBALANCE_TIMEOUT_S = 30.0

REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 15
REDIS_GROUP = "bench"


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each figure does (records unless named otherwise)."""

    produce: int
    consume: int
    latency_samples: int
    rebalance_repeats: int
    redis: int


FULL = Sizes(
    produce=200_000,
    consume=200_000,
    latency_samples=300,
    rebalance_repeats=20,
    redis=200_000,
)
QUICK = Sizes(
    produce=50_000,
    consume=50_000,
    latency_samples=100,
    rebalance_repeats=10,
    redis=50_000,
)

# name -> (unit, what it measures); the order is the order of the printed table
FIGURES: dict[str, tuple[str, str]] = {
    "produce_batch_per_s": (
        "msg/s",
        f"produce() of {BATCH:,} keyless {VALUE_SIZE}-byte records per call, "
        f"{PARTITIONS} partitions (sticky)",
    ),
    "produce_batch_keyed_per_s": (
        "msg/s",
        f"the same with a distinct {KEY_SIZE}-byte key per record (murmur2 partitioning)",
    ),
    "raw_sqlite_append_batch_per_s": (
        "msg/s",
        f"raw sqlite3: the engine's append SQL, {BATCH:,} rows per transaction",
    ),
    "consume_per_s": (
        "msg/s",
        f"fetch(max_records={BATCH:,}) of every partition's position until drained",
    ),
    "latency_p50_ms": ("ms", "idle produce -> fetch(wait=1) in another process, median"),
    "latency_p99_ms": ("ms", "idle produce -> fetch(wait=1) in another process, 99th percentile"),
    "rebalance_s": (
        "s",
        f"second member's join_group -> it owns its share of {REBALANCE_PARTITIONS} partitions",
    ),
    "redis_xadd_pipelined_per_s": (
        "msg/s",
        f"Redis XADD of {VALUE_SIZE}-byte values, {BATCH:,} per pipelined round trip",
    ),
    "redis_xreadgroup_per_s": ("msg/s", f"Redis XREADGROUP COUNT {BATCH:,} + XACK until drained"),
}
RATIOS: dict[str, tuple[str, str]] = {
    "produce_vs_raw_sqlite": ("x", "produce_batch_per_s / raw_sqlite_append_batch_per_s"),
    "consume_vs_redis_xreadgroup": ("x", "consume_per_s / redis_xreadgroup_per_s"),
}

TARGETS = (
    Target("batch produce >= 150,000 records/s", "produce_batch_per_s", ">=", 150_000),
    Target("consume >= 300,000 records/s", "consume_per_s", ">=", 300_000),
    Target("idle produce->consume latency p50 <= 2 ms", "latency_p50_ms", "<=", 2.0),
)


def ratios(results: Mapping[str, float]) -> Figures:
    """Comparisons within one run; a ratio is left out when a side is missing or zero."""

    def ratio(top: str, bottom: str) -> float | None:
        if top in results and results.get(bottom):
            return results[top] / results[bottom]
        return None

    found = {
        "produce_vs_raw_sqlite": ratio("produce_batch_per_s", "raw_sqlite_append_batch_per_s"),
        "consume_vs_redis_xreadgroup": ratio("consume_per_s", "redis_xreadgroup_per_s"),
    }
    return {name: value for name, value in found.items() if value is not None}


def run(quick: bool) -> Figures:
    """Measure every figure once, in a fresh temporary directory."""
    sizes = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-streams-") as directory:
        measured = measure(Path(directory), sizes)
    return {name: measured[name] for name in FIGURES if name in measured}


def broker_url(path: Path) -> str:
    return f"sqlite:///{path}?durability=normal"


def measure(directory: Path, sizes: Sizes) -> Figures:
    """Each figure in its own database file; the raw baseline right before its peer."""
    results: Figures = {}

    progress(f"raw sqlite3: {sizes.produce:,} rows, {BATCH:,} per transaction")
    results["raw_sqlite_append_batch_per_s"] = raw_append(directory / "raw.db", sizes.produce)
    progress(f"produce: {sizes.produce:,} keyless records, {BATCH:,} per call")
    results["produce_batch_per_s"] = asyncio.run(
        produce_batch(directory / "produce.db", sizes.produce, keyed=False)
    )
    progress(f"produce: {sizes.produce:,} keyed records, {BATCH:,} per call")
    results["produce_batch_keyed_per_s"] = asyncio.run(
        produce_batch(directory / "produce-keyed.db", sizes.produce, keyed=True)
    )

    progress(f"consume: reading back {sizes.consume:,} records")
    results["consume_per_s"] = asyncio.run(consume(directory / "consume.db", sizes.consume))

    progress(f"latency: {sizes.latency_samples:,} idle produces to a consumer process")
    delays = latency(directory / "latency.db", sizes.latency_samples)
    results["latency_p50_ms"] = percentile(delays, 50)
    results["latency_p99_ms"] = percentile(delays, 99)

    progress(
        f"rebalance: {sizes.rebalance_repeats} joins of a second member, "
        f"{REBALANCE_PARTITIONS} partitions"
    )
    results["rebalance_s"] = percentile(
        [
            asyncio.run(rebalance(directory / f"rebalance-{number}.db"))
            for number in range(sizes.rebalance_repeats)
        ],
        50,
    )

    results.update(measure_redis(sizes.redis))
    return results


# the raw sqlite3 baseline

# The engine's own records and partitions tables and the records' time index, so the
# baseline does the same SQL work; the statements are those of streams.append.
RAW_SCHEMA = tuple(
    statement
    for statement in MIGRATIONS[2]
    if statement.split("(")[0].split()[-1] in ("records", "partitions")
)
RAW_END_OFFSET = "SELECT end_offset FROM partitions WHERE topic_id = ? AND partition = ?"
RAW_ADVANCE = (
    "UPDATE partitions SET end_offset = end_offset + ?, records = records + ?,"
    " bytes = bytes + ? WHERE topic_id = ? AND partition = ?"
)
RAW_INSERT = (
    "INSERT INTO records (topic_id, partition, offset, timestamp_ms, key, value, headers,"
    " size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
RAW_TOPIC_ID = 1


def raw_connection(path: Path) -> sqlite3.Connection:
    """A connection set up as the engine's at durability normal, on tables like its."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    for statement in RAW_SCHEMA:
        connection.execute(statement)
    connection.executemany(
        "INSERT INTO partitions (topic_id, partition) VALUES (?, ?)",
        [(RAW_TOPIC_ID, partition) for partition in range(PARTITIONS)],
    )
    return connection


def raw_rows(partition: int, end: int, count: int, now_ms: int) -> list[tuple[Any, ...]]:
    """``count`` keyless rows for ``partition`` from offset ``end`` on, as append writes them."""
    return [
        (RAW_TOPIC_ID, partition, offset, now_ms, None, VALUE, None, VALUE_SIZE)
        for offset in range(end, end + count)
    ]


def raw_append(path: Path, count: int) -> float:
    """Rows per second appending ``count`` rows, ``BATCH`` per transaction, one partition each.

    Per transaction, as the engine for a keyless batch: read the partition's end offset,
    advance its counters, insert the rows with ``executemany``. The partition moves on
    each batch, as the sticky partitioner's does.
    """
    connection = raw_connection(path)
    try:
        with Stopwatch() as watch:
            for number in range(count // BATCH):
                partition = number % PARTITIONS
                connection.execute("BEGIN IMMEDIATE")
                (end,) = connection.execute(RAW_END_OFFSET, (RAW_TOPIC_ID, partition)).fetchone()
                connection.execute(
                    RAW_ADVANCE, (BATCH, BATCH, BATCH * VALUE_SIZE, RAW_TOPIC_ID, partition)
                )
                rows = raw_rows(partition, end, BATCH, int(time.time() * 1000))
                connection.executemany(RAW_INSERT, rows)
                connection.execute("COMMIT")
        (stored,) = connection.execute("SELECT count(*) FROM records").fetchone()
    finally:
        connection.close()
    if stored != count // BATCH * BATCH:
        raise RuntimeError(f"the raw baseline stored {stored} rows, expected {count}")
    return per_second(count // BATCH * BATCH, watch.seconds)


# produce and consume


async def new_topic(path: Path, name: str = TOPIC, partitions: int = PARTITIONS) -> Broker:
    broker = open_broker(broker_url(path))
    await broker.connect()
    await broker.create_topic(TopicSpec(name, partitions, TopicConfig()))
    return broker


def distinct_keys(count: int) -> list[bytes]:
    """``count`` random keys of KEY_SIZE bytes, so the partitioner's key cache never hits."""
    pool = os.urandom(count * KEY_SIZE)
    return [pool[start : start + KEY_SIZE] for start in range(0, count * KEY_SIZE, KEY_SIZE)]


async def produce_batch(path: Path, count: int, *, keyed: bool) -> float:
    """Records per second through produce() of BATCH records per call (records built inside)."""
    calls = count // BATCH
    keys = distinct_keys(calls * BATCH) if keyed else []
    broker = await new_topic(path)
    try:
        with Stopwatch() as watch:
            if keyed:
                for start in range(0, calls * BATCH, BATCH):
                    await broker.produce(
                        TOPIC, [ProducerRecord(VALUE, key) for key in keys[start : start + BATCH]]
                    )
            else:
                for _ in range(calls):
                    await broker.produce(TOPIC, [ProducerRecord(VALUE) for _ in range(BATCH)])
        await check_stored(broker, calls * BATCH)
    finally:
        await broker.close()
    return per_second(calls * BATCH, watch.seconds)


async def check_stored(broker: Broker, expected: int) -> dict[TopicPartition, int]:
    """Each partition's log end offset; raises unless the topic holds ``expected`` records."""
    info = await broker.describe_topic(TOPIC)
    if info.records != expected or sum(p.end - p.start for p in info.partitions) != expected:
        raise RuntimeError(
            f"topic {TOPIC!r} holds {info.records} records (offsets "
            f"{[(p.start, p.end) for p in info.partitions]}), expected {expected}"
        )
    return {TopicPartition(TOPIC, p.partition): p.end for p in info.partitions}


async def fill(broker: Broker, count: int) -> None:
    """Produce ``count`` keyless records, BATCH per call (not timed)."""
    for start in range(0, count, BATCH):
        size = min(BATCH, count - start)
        metadata = await broker.produce(TOPIC, [ProducerRecord(VALUE) for _ in range(size)])
        if len(metadata) != size:
            raise RuntimeError(f"produce of {size} records returned {len(metadata)} placements")


def rotated(positions: Mapping[TopicPartition, int], first: int) -> dict[TopicPartition, int]:
    """The positions starting with the ``first``-th (modulo), so every partition leads in turn."""
    items = list(positions.items())
    first %= max(len(items), 1)
    return dict(items[first:] + items[:first])


def advance(positions: dict[TopicPartition, int], records: Sequence[Record]) -> int:
    """Move each partition's position past the records read; the value bytes touched.

    Records come in offset order per partition; each must be exactly the one at its
    partition's position (a gap or a repeat raises RuntimeError).
    """
    touched = 0
    current: TopicPartition | None = None
    expected = 0
    for record in records:
        if current is None or record.partition != current[1] or record.topic != current[0]:
            if current is not None:
                positions[current] = expected
            current = TopicPartition(record.topic, record.partition)
            expected = positions[current]
        if record.offset != expected:
            raise RuntimeError(
                f"{record.topic}[{record.partition}] returned offset {record.offset} at "
                f"position {expected}"
            )
        expected += 1
        touched += len(record.value or b"")
    if current is not None:
        positions[current] = expected
    return touched


async def consume(path: Path, count: int) -> float:
    """Records per second reading a filled topic back, BATCH per fetch(), until drained.

    The consumer keeps each partition's position, passes all of them on every call with
    the leading partition taking turns, and touches every value.
    """
    broker = await new_topic(path)
    try:
        await fill(broker, count)
        ends = await check_stored(broker, count)
        positions = dict.fromkeys(ends, 0)
        received = touched = calls = 0
        with Stopwatch() as watch:
            while records := await broker.fetch(rotated(positions, calls), max_records=BATCH):
                touched += advance(positions, records)
                received += len(records)
                calls += 1
    finally:
        await broker.close()
    if received != count or positions != ends or touched != count * VALUE_SIZE:
        raise RuntimeError(
            f"read {received} records ({touched} value bytes) up to {positions}, expected "
            f"{count} up to {ends}"
        )
    return per_second(received, watch.seconds)


# cross-process latency


def latency(path: Path, samples: int) -> list[float]:
    """Produce-to-fetch delays (ms) seen by a consumer process that was idle each time.

    The consumer long-polls ``fetch(wait=1)`` on a 1-partition topic. Before each record
    the parent checks, in the store's ``waiters`` table, that the consumer is registered
    and asleep on its wake-up socket, lets it sleep 4-6 ms more, then produces one record
    whose value is ``time.time()``; the consumer subtracts that from ``time.time()`` when
    fetch returns.
    """
    asyncio.run(declare_latency_topic(path))
    command = bench_module_command("bench.streams", "latency-consumer", broker_url(path))
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    with terminating(process):
        expect_line(process, "ready", timeout=60)
        asyncio.run(produce_stamps(path, process, LATENCY_WARMUP + samples))
        stdout, _ = process.communicate(timeout=60)
    if process.returncode != 0:
        raise RuntimeError(f"the latency consumer exited with {process.returncode}")
    delays: list[float] = json.loads(stdout.strip().splitlines()[-1])["latency_ms"]
    if len(delays) != LATENCY_WARMUP + samples:
        raise RuntimeError(f"the consumer saw {len(delays)} records, expected {samples}")
    return delays[LATENCY_WARMUP:]


async def declare_latency_topic(path: Path) -> None:
    broker = await new_topic(path, LATENCY_TOPIC, 1)
    await broker.close()


async def produce_stamps(path: Path, consumer: subprocess.Popen[str], count: int) -> None:
    """Produce ``count`` timestamped records one per call, each to an idle consumer; a stop."""
    broker = await new_topic(path, LATENCY_TOPIC, 1)
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
            await broker.produce(LATENCY_TOPIC, [ProducerRecord(stamp.ljust(VALUE_SIZE))])
        await broker.produce(LATENCY_TOPIC, [ProducerRecord(STOP)])
    finally:
        watcher.close()
        await broker.close()


async def latency_consumer(url: str) -> None:
    """Child: fetch(wait=1) from its position in a loop; record fetch time minus the stamp."""
    delays: list[float] = []
    partition = TopicPartition(LATENCY_TOPIC, 0)
    position = 0
    idle_since = time.monotonic()
    async with open_broker(url) as broker:
        print("ready", flush=True)
        while True:
            records = await broker.fetch({partition: position}, max_records=100, wait=1)
            received = time.time()
            if not records:
                if time.monotonic() - idle_since > 120:
                    raise SystemExit("latency consumer: nothing for 120 s, giving up")
                continue
            idle_since = time.monotonic()
            for record in records:
                if record.offset != position:
                    raise SystemExit(f"latency consumer: offset {record.offset} at {position}")
                position += 1
                if record.value == STOP:
                    print(json.dumps({"latency_ms": delays}), flush=True)
                    return
                delays.append((received - float((record.value or b"").decode())) * 1000)


# rebalancing


async def rebalance(path: Path) -> float:
    """Seconds from a second member's join_group until it owns every partition it is assigned.

    The first member owns all the partitions and heartbeats every 10 ms, releasing on each
    heartbeat what the previous one told it was revoked; the second joins at a random phase
    of that loop, then heartbeats every 1 ms until its ``owned`` matches its ``assigned``.
    So the first member's next heartbeat learns what it lost and the one after releases it:
    10-20 ms of the figure is that loop's interval. Two brokers (two connections) on one
    file, in one process.
    """
    first_broker = await new_topic(path, REBALANCE_TOPIC, REBALANCE_PARTITIONS)
    second_broker = open_broker(broker_url(path))
    await second_broker.connect()
    try:
        first = await first_broker.join_group(REBALANCE_GROUP, [REBALANCE_TOPIC])
        first = await first_broker.heartbeat_group(REBALANCE_GROUP, first.member_id)
        if len(first.owned) != REBALANCE_PARTITIONS:
            raise RuntimeError(f"the only member owns {len(first.owned)} partitions")
        stop = asyncio.Event()
        heartbeats = asyncio.create_task(keep_releasing(first_broker, first, stop))
        try:
            # join at a random phase of the first member's heartbeat loop
            await asyncio.sleep(random.uniform(2, 3) * FIRST_HEARTBEAT_S)
            async with asyncio.timeout(REBALANCE_TIMEOUT_S):
                with Stopwatch() as watch:
                    second = await second_broker.join_group(REBALANCE_GROUP, [REBALANCE_TOPIC])
                    while not second.assigned or set(second.owned) != set(second.assigned):
                        if heartbeats.done():
                            break  # the first member failed: its exception is raised below
                        await asyncio.sleep(SECOND_HEARTBEAT_S)
                        second = await second_broker.heartbeat_group(
                            REBALANCE_GROUP, second.member_id
                        )
        finally:
            stop.set()
            first = await heartbeats
        check_split(first, second)
        await second_broker.leave_group(REBALANCE_GROUP, second.member_id)
        await first_broker.leave_group(REBALANCE_GROUP, first.member_id)
    finally:
        await second_broker.close()
        await first_broker.close()
    return watch.seconds


async def keep_releasing(broker: Broker, membership: Membership, stop: asyncio.Event) -> Membership:
    """Heartbeat every FIRST_HEARTBEAT_S, releasing what was revoked; the last membership."""
    while not stop.is_set():
        await asyncio.sleep(FIRST_HEARTBEAT_S)
        membership = await broker.heartbeat_group(
            membership.group, membership.member_id, release=membership.revoked
        )
    return membership


def check_split(first: Membership, second: Membership) -> None:
    """Both members own what they are assigned, nothing twice, every partition once."""
    owned = [*first.owned, *second.owned]
    if (
        set(second.owned) != set(second.assigned)
        or not second.owned
        or len(set(owned)) != len(owned)
        or len(owned) != REBALANCE_PARTITIONS
    ):
        raise RuntimeError(
            f"after the rebalance the first member owns {first.owned} (assigned "
            f"{first.assigned}) and the second {second.owned} (assigned {second.assigned})"
        )


# Redis Streams


def redis_missing() -> str | None:
    """Why Redis cannot be measured here (library not installed, no server), or None."""
    if importlib.util.find_spec("redis") is None:
        return "redis is not installed (pip install -e '.[bench]')"
    if not server_listening(REDIS_HOST, REDIS_PORT):
        return f"nothing listens on {REDIS_HOST}:{REDIS_PORT}"
    return None


def measure_redis(count: int) -> Figures:
    """XADD pipelined and XREADGROUP + XACK on a stream of this run's own, then deleted."""
    if (reason := redis_missing()) is not None:
        progress(f"redis: skipped, {reason}")
        return {}
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    key = f"conveyor-bench-streams-{secrets.token_hex(8)}"
    try:
        progress(f"redis: XADD {count:,} values, {BATCH:,} per pipeline")
        added = redis_xadd(client, key, count)
        progress(f"redis: XREADGROUP + XACK of {count // BATCH * BATCH:,} entries")
        read = redis_xreadgroup(client, key, count // BATCH * BATCH)
    finally:
        client.delete(key)
        client.close()
    return {"redis_xadd_pipelined_per_s": added, "redis_xreadgroup_per_s": read}


def redis_xadd(client: Any, key: str, count: int) -> float:
    pipeline = client.pipeline(transaction=False)
    with Stopwatch() as watch:
        for _ in range(count // BATCH):
            for _ in range(BATCH):
                pipeline.xadd(key, {b"v": VALUE})
            pipeline.execute()
    if (stored := client.xlen(key)) != count // BATCH * BATCH:
        raise RuntimeError(f"the Redis stream holds {stored} entries, expected {count}")
    return per_second(count // BATCH * BATCH, watch.seconds)


def redis_xreadgroup(client: Any, key: str, count: int) -> float:
    client.xgroup_create(key, REDIS_GROUP, id="0")
    received = touched = 0
    with Stopwatch() as watch:
        while True:
            reply = client.xreadgroup(REDIS_GROUP, "c1", {key: ">"}, count=BATCH)
            entries = reply[0][1] if reply else []
            if not entries:
                break
            ids = []
            for entry_id, fields in entries:
                touched += len(fields[b"v"])
                ids.append(entry_id)
            client.xack(key, REDIS_GROUP, *ids)
            received += len(ids)
    if received != count or touched != count * VALUE_SIZE:
        raise RuntimeError(f"XREADGROUP read {received} entries, expected {count}")
    return per_second(received, watch.seconds)


SUITE = Suite(
    name="streams",
    description="embedded SQLite broker streams beside raw sqlite3 and Redis Streams",
    run=run,
    ratios=ratios,
    targets=TARGETS,
    units=units_of(FIGURES, RATIOS),
)


def child_main(argv: list[str]) -> None:
    """Entry point of the child process: ``python -m bench.streams latency-consumer URL``."""
    match argv:
        case ["latency-consumer", url]:
            asyncio.run(latency_consumer(url))
        case _:
            raise SystemExit("usage: python -m bench.streams latency-consumer URL")


if __name__ == "__main__":
    child_main(sys.argv[1:])
