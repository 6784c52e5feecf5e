"""The ``backends`` suite: Conveyor's RabbitMQ backend beside aio-pika doing the same work.

The question is what Conveyor's layer costs on top of the AMQP client it is built on, so
each Conveyor figure has a raw aio-pika twin measured in the same run, on the same server
(127.0.0.1:5672, guest/guest):

- publish: 100-byte persistent messages to one durable queue, in batches of 100, each
  batch confirmed by the server before the next (Conveyor's ``publish_batch`` returns
  once every message is confirmed; the raw twin publishes 100 on a confirming channel,
  then awaits the 100 confirms).
- consume: draining a pre-filled queue, every message acknowledged (Conveyor's
  ``receive(max_messages=100)`` + ``ack_many``; the raw twin a ``basic_consume`` with the
  prefetch Conveyor's backend uses and an ack per message).

Each side of a pair is measured in rounds in mirrored order (raw, Conveyor, Conveyor,
raw, ...), so that the server's drift during a run falls on both sides alike. Every round
gets a fresh queue whose name holds a random token, and deletes it afterwards, so runs
never see each other's messages and leave nothing on the server. aio-pika (the
``rabbitmq`` extra) is imported only when the suite runs, so that ``python -m bench`` and
its other suites work without it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bench.harness import Figures, Stopwatch, Suite, Target, per_second, progress, units_of
from conveyor import Broker, Message, QueueSpec, open_broker
from conveyor.message import new_message_id

if TYPE_CHECKING:
    import aio_pika
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


@dataclass(frozen=True, slots=True)
class Sizes:
    """Messages per figure, split evenly over its ``ROUNDS`` rounds."""

    publish: int
    consume: int


FULL = Sizes(publish=100_000, consume=100_000)
QUICK = Sizes(publish=10_000, consume=10_000)

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
}
RATIOS: dict[str, tuple[str, str]] = {
    "rabbitmq_publish_vs_raw": ("x", "rabbitmq_publish_per_s / rabbitmq_raw_publish_per_s"),
    "rabbitmq_consume_vs_raw": ("x", "rabbitmq_consume_per_s / rabbitmq_raw_consume_per_s"),
}

TARGETS = (
    Target("RabbitMQ publish >= 80% of raw aio-pika", "rabbitmq_publish_vs_raw", ">=", 0.8),
    Target("RabbitMQ consume >= 80% of raw aio-pika", "rabbitmq_consume_vs_raw", ">=", 0.8),
)


def ratios(results: Mapping[str, float]) -> Figures:
    """Comparisons within one run; a ratio is left out when a side is missing or zero."""
    found: Figures = {}
    for name, top, bottom in (
        ("rabbitmq_publish_vs_raw", "rabbitmq_publish_per_s", "rabbitmq_raw_publish_per_s"),
        ("rabbitmq_consume_vs_raw", "rabbitmq_consume_per_s", "rabbitmq_raw_consume_per_s"),
    ):
        if top in results and results.get(bottom):
            found[name] = results[top] / results[bottom]
    return found


class Unreachable(SystemExit):
    """The suite cannot run here: one line saying why, instead of a traceback."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"backends: {reason}")


def run(quick: bool) -> Figures:
    """Measure every figure once; exit with one line if RabbitMQ or the backend is missing."""
    sizes = QUICK if quick else FULL
    asyncio.run(check_reachable())
    measured = asyncio.run(measure(sizes, secrets.token_hex(4)))
    return {name: measured[name] for name in FIGURES if name in measured}


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


SUITE = Suite(
    name="backends",
    description="Conveyor's RabbitMQ backend beside raw aio-pika on the same server",
    run=run,
    ratios=ratios,
    targets=TARGETS,
    units=units_of(FIGURES, RATIOS),
)
