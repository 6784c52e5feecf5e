"""``conveyor consume QUEUE`` and ``conveyor consume --topic TOPIC``: JSON lines on stdout.

From a queue, each message is leased, printed, then acknowledged (at least once: a crash
between print and ack prints it again later); ``--no-ack`` browses instead and changes
nothing. From a topic, records are read from the latest offset (``--from-beginning``: the
earliest), as a member of ``--group`` (whose committed offsets win, and which commits what
was printed) or from every partition by hand.

It runs until Ctrl-C, ``--max-messages N`` (exit 0 after N), or ``--timeout`` seconds with
nothing new; a timeout before N messages exits 1. The count goes to stderr at the end.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from conveyor.brokers.types import Delivery, QueuedMessage
from conveyor.cli.common import (
    Context,
    UsageError,
    add_command,
    argument_type,
    duration_type,
    positive_int,
)
from conveyor.cli.output import json_line, note, payload, plural
from conveyor.errors import ConfigError, ConveyorError, PartitionNotFound
from conveyor.events.consumer import OffsetReset, open_consumer

BATCH = 100


def add_parser(commands: Any) -> None:
    count = argument_type(positive_int)
    parser = add_command(
        commands,
        "consume",
        consume,
        "print messages from a queue, or records from a topic, as JSON lines",
        description=__doc__,
    )
    parser.add_argument("queue", nargs="?", metavar="QUEUE", help="the queue to take from")
    parser.add_argument("--topic", help="read this topic instead of a queue")
    parser.add_argument("--group", help="topics: read as a member of this consumer group")
    parser.add_argument(
        "--from-beginning", action="store_true", help="topics: start at the earliest offset"
    )
    parser.add_argument("--partition", type=int, metavar="N", help="topics: only this one")
    parser.add_argument("--offset", type=int, metavar="N", help="topics: start here")
    parser.add_argument("--max-messages", type=count, metavar="N", help="stop after N")
    parser.add_argument(
        "--timeout", type=duration_type, metavar="DURATION", help="stop after this long idle"
    )
    parser.add_argument(
        "--no-ack", action="store_true", help="queues: print without taking (a browse)"
    )
    parser.add_argument("--lease-timeout", type=duration_type, metavar="DURATION")
    parser.add_argument(
        "--value-only", action="store_true", help="print only each body or value, as text"
    )


def _check(arguments: Any) -> None:
    if bool(arguments.queue) == bool(arguments.topic):
        raise UsageError("consume takes a QUEUE or --topic TOPIC (one of them)")
    wrong = (
        ["--no-ack", "--lease-timeout"]
        if arguments.topic
        else ["--group", "--from-beginning", "--partition", "--offset"]
    )
    given = [option for option in wrong if _given(arguments, option)]
    if given:
        kind = "a queue" if arguments.topic else "a topic"
        raise UsageError(f"{', '.join(given)} is for {kind}")
    if arguments.offset is not None and arguments.partition is None:
        raise UsageError("--offset needs --partition")
    if arguments.group and arguments.partition is not None:
        raise UsageError("--partition and --offset read by hand; leave out --group")


def _given(arguments: Any, option: str) -> bool:
    value = getattr(arguments, option.lstrip("-").replace("-", "_"))
    return value not in (None, False)


class _Count:
    """Messages printed, and when to stop: at ``limit``, or ``timeout`` seconds idle."""

    def __init__(self, limit: int | None, timeout: float | None) -> None:
        self.limit = limit
        self.timeout = timeout
        self.count = 0
        self._idle_until = time.monotonic() + (timeout or 0.0)

    def room(self) -> int:
        return BATCH if self.limit is None else min(BATCH, self.limit - self.count)

    def wait(self) -> float:
        if self.timeout is None:
            return 1.0
        return max(0.0, min(1.0, self._idle_until - time.monotonic()))

    def done(self) -> bool:
        if self.limit is not None and self.count >= self.limit:
            return True
        return self.timeout is not None and time.monotonic() >= self._idle_until

    def add(self, count: int) -> None:
        if count:
            self.count += count
            self._idle_until = time.monotonic() + (self.timeout or 0.0)
            sys.stdout.flush()

    def check(self) -> None:
        if self.limit is not None and self.count < self.limit:
            raise ConveyorError(
                f"timed out after {self.timeout:g}s idle with {self.count} of {self.limit} messages"
            )


def _emit(ctx: Context, line: dict[str, Any], field: str) -> None:
    if ctx.arguments.value_only:
        value = line.get(field)
        print(value if value is not None else line.get(f"{field}_base64", ""))
    else:
        print(json_line(line))


def _message_line(item: Delivery | QueuedMessage) -> dict[str, Any]:
    message = item.message
    line: dict[str, Any] = {
        "queue": item.queue,
        "id": message.id,
        "routing_key": message.routing_key,
        **payload("body", bytes(message.body)),
        "headers": dict(message.headers),
        "priority": message.priority,
        "timestamp": message.timestamp,
        "delivery_count": item.delivery_count,
    }
    if message.content_type:
        line["content_type"] = message.content_type
    if isinstance(item, QueuedMessage):
        line["leased"] = item.leased
    return line


async def consume(ctx: Context) -> int:
    arguments = ctx.arguments
    _check(arguments)
    count = _Count(arguments.max_messages, arguments.timeout)
    noun = "record" if arguments.topic else "message"
    try:
        if arguments.topic:
            await _from_topic(ctx, count)
        elif arguments.no_ack:
            await _browse(ctx, count)
        else:
            await _from_queue(ctx, count)
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C cancels the command's task
        note(f"consumed {plural(count.count, noun)}")
        raise
    if not arguments.no_ack:
        count.check()
    note(f"consumed {plural(count.count, noun)}")
    return 0


async def _from_queue(ctx: Context, count: _Count) -> None:
    broker, queue = ctx.broker, ctx.arguments.queue
    await broker.queue_stats(queue)  # a missing queue fails at once
    while not count.done():
        deliveries = await broker.receive(
            queue,
            max_messages=count.room(),
            lease_timeout=ctx.arguments.lease_timeout,
            wait=count.wait(),
        )
        for delivery in deliveries:
            _emit(ctx, _message_line(delivery), "body")
        if deliveries:
            sys.stdout.flush()
            await broker.ack_many(deliveries)
        count.add(len(deliveries))


async def _browse(ctx: Context, count: _Count) -> None:
    offset = 0
    while not (count.limit is not None and count.count >= count.limit):
        page = await ctx.broker.browse(ctx.arguments.queue, limit=count.room(), offset=offset)
        if not page:
            return
        for queued in page:
            _emit(ctx, _message_line(queued), "body")
        offset += len(page)
        count.add(len(page))


async def _from_topic(ctx: Context, count: _Count) -> None:
    arguments = ctx.arguments
    topic = arguments.topic
    info = await ctx.broker.describe_topic(topic)
    reset: OffsetReset = "earliest" if arguments.from_beginning else "latest"
    if arguments.group:
        consumer = open_consumer(
            ctx.broker, [topic], group=arguments.group, auto_offset_reset=reset
        )
    else:
        chosen = range(info.spec.partitions)
        if arguments.partition is not None:
            if arguments.partition not in chosen:
                raise PartitionNotFound(topic, arguments.partition, info.spec.partitions)
            chosen = range(arguments.partition, arguments.partition + 1)
        consumer = open_consumer(
            ctx.broker, assign=[(topic, p) for p in chosen], auto_offset_reset=reset
        )
    await consumer.start()
    try:
        if arguments.offset is not None:
            log = info.partitions[arguments.partition]
            if not log.start <= arguments.offset <= log.end:
                raise ConfigError(
                    f"--offset {arguments.offset} is outside {topic}:{arguments.partition}, "
                    f"which holds offsets {log.start}-{log.end}"
                )
            consumer.seek((topic, arguments.partition), arguments.offset)
        while not count.done():
            records = await consumer.poll(timeout=count.wait(), max_records=count.room())
            for record in records:
                line = {
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "timestamp": record.timestamp,
                    **payload("key", record.key),
                    **payload("value", record.value),
                    "headers": dict(record.headers),
                }
                _emit(ctx, line, "value")
            count.add(len(records))
    finally:
        await consumer.close()
