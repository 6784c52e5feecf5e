"""``conveyor publish`` and ``conveyor produce``: one message or record per line of stdin.

Lines are sent in batches as they arrive (a batch goes as soon as stdin has nothing more
ready), so a pipe that never ends, or a person typing, is sent line by line. Blank lines
are skipped. A bad line stops the command: what came before it was sent, nothing after.
"""

from __future__ import annotations

import json
import select
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from conveyor.brokers.stream_types import ProducerRecord
from conveyor.cli.common import (
    Context,
    UsageError,
    add_command,
    argument_type,
    duration_type,
    key_values,
    positive_int,
)
from conveyor.cli.output import Progress, note, plural, print_json
from conveyor.errors import ConfigError, ConveyorError, ExchangeNotFound, PartitionNotFound
from conveyor.events.producer import Producer
from conveyor.message import Message

Lines = list[tuple[int, str]]
_FIELDS = frozenset({"body", "routing_key", "headers", "priority", "ttl", "id", "content_type"})


def add_parser(commands: Any) -> None:
    count = argument_type(positive_int)
    sender = add_command(
        commands,
        "publish",
        publish,
        "publish stdin lines to a queue or an exchange",
        description=f"Publish each line of stdin as a message. {__doc__}",
    )
    sender.add_argument("target", metavar="QUEUE_OR_EXCHANGE")
    sender.add_argument(
        "--exchange", action="store_true", help="the target is an exchange (not a queue)"
    )
    sender.add_argument("--routing-key", metavar="KEY", help="for an exchange (default '')")
    sender.add_argument(
        "--format",
        choices=["raw", "json"],
        default="raw",
        help="raw: each line is a body; json: each line is an object with 'body' and "
        "optionally 'routing_key', 'headers', 'priority', 'ttl', 'id', 'content_type'",
    )
    sender.add_argument("--header", action="append", metavar="KEY=VALUE", help="repeatable")
    sender.add_argument("--priority", type=int, default=0, metavar="N")
    sender.add_argument("--ttl", type=duration_type, metavar="DURATION")
    sender.add_argument("--delay", type=duration_type, default=0.0, metavar="DURATION")
    sender.add_argument("--mandatory", action="store_true", help="fail on a message no queue takes")
    sender.add_argument("--batch-size", type=count, default=500, metavar="N")
    appender = add_command(
        commands,
        "produce",
        produce,
        "append stdin lines to a topic",
        description=f"Append each line of stdin as a record. {__doc__}",
    )
    appender.add_argument("topic")
    appender.add_argument(
        "--key-separator",
        metavar="SEP",
        help="each line is KEY<SEP>VALUE (kafka-console-producer's parse.key), e.g. ':'",
    )
    appender.add_argument("--partition", type=int, metavar="N", help="default: by key")
    appender.add_argument("--header", action="append", metavar="KEY=VALUE", help="repeatable")
    appender.add_argument(
        "--null-marker", metavar="TEXT", help="a value equal to TEXT is a tombstone (None)"
    )
    appender.add_argument("--batch-size", type=count, default=500, metavar="N")


def read_batches(stream: TextIO, size: int) -> Iterator[Lines]:
    """Numbered non-blank lines, in batches of up to ``size``; a batch ends early when the
    stream has nothing more ready, so that a slow writer's lines are not held back."""
    batch: Lines = []
    for number, line in enumerate(stream, start=1):
        text = line.rstrip("\r\n")
        if text.strip():
            batch.append((number, text))
        if batch and (len(batch) >= size or not _ready(stream)):
            yield batch
            batch = []
    if batch:
        yield batch


def _ready(stream: TextIO) -> bool:
    """More input can be read now without waiting (always true for files and buffers)."""
    try:
        readable, _, _ = select.select([stream], [], [], 0)
    except (OSError, ValueError, TypeError):
        return True
    return bool(readable)


class _Sent:
    """Counts what was sent, for the final line and for the message of a failure."""

    def __init__(self, verb: str) -> None:
        self.progress = Progress(verb)
        self.count = 0

    def add(self, count: int) -> None:
        self.count += count
        self.progress.advance(count)

    def failed(self, error: Exception, line: int, last: int | None = None) -> ConfigError:
        """The error for the lines from ``line`` (to ``last``, for a batch the broker refused)."""
        self.progress.done()
        where = f"line {line}" if last is None else f"lines {line}-{last}"
        return ConfigError(f"{where}: {error}; {self.count} sent before, nothing from there on")


async def _publish_target(ctx: Context) -> tuple[str, str | None]:
    """(exchange, routing key or None for per-line keys): the queue via the default
    exchange, or the named exchange."""
    arguments = ctx.arguments
    target = arguments.target
    if not arguments.exchange and target in {q.name for q in await ctx.broker.list_queues()}:
        if arguments.routing_key is not None:
            raise UsageError(f"{target!r} is a queue; --routing-key goes with an exchange")
        return "", target
    try:
        await ctx.broker.exchange_stats(target)
    except ExchangeNotFound:
        kind = "exchange" if arguments.exchange else "queue or exchange"
        raise ConfigError(
            f"there is no {kind} named {target!r}; see conveyor queues list, or declare it"
        ) from None
    return target, arguments.routing_key


def _message(ctx: Context, line: str, exchange: str, routing_key: str | None) -> Message:
    arguments = ctx.arguments
    headers: dict[str, Any] = dict(arguments.headers)
    if arguments.format == "raw":
        return Message(line.encode(), routing_key or "", headers, arguments.priority, arguments.ttl)
    try:
        data = json.loads(line)
    except ValueError as error:
        raise ConfigError(f"not JSON ({error})") from None
    if not isinstance(data, dict) or "body" not in data:
        raise ConfigError("expected a JSON object with a 'body'")
    unknown = set(data) - _FIELDS
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(sorted(unknown))}")
    if "routing_key" in data and exchange == "":
        raise ConfigError("'routing_key' goes with an exchange, not a queue")
    if not isinstance(data.get("headers") or {}, dict):
        raise ConfigError("'headers' must be a JSON object")
    ttl = data.get("ttl", arguments.ttl)
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)):
        raise ConfigError(f"'ttl' must be a number of seconds, not {ttl!r}")
    body = data["body"]
    is_text = isinstance(body, str)
    options: dict[str, Any] = {
        "routing_key": data.get("routing_key", routing_key or ""),
        "headers": {**headers, **(data.get("headers") or {})},
        "priority": data.get("priority", arguments.priority),
        "ttl": ttl,
        "content_type": data.get("content_type", None if is_text else "application/json"),
    }
    if "id" in data:
        options["id"] = str(data["id"])
    encoded = body.encode() if is_text else json.dumps(body, separators=(",", ":")).encode()
    return Message(encoded, **options)


async def publish(ctx: Context) -> int:
    arguments = ctx.arguments
    arguments.headers = key_values(arguments.header, "--header")
    exchange, routing_key = await _publish_target(ctx)
    sent = _Sent("published")
    unroutable = 0
    for batch in read_batches(sys.stdin, arguments.batch_size):
        messages = []
        for number, line in batch:
            try:
                messages.append(_message(ctx, line, exchange, routing_key))
            except (ConveyorError, TypeError) as error:  # TypeError: e.g. "ttl": "soon"
                raise sent.failed(error, number) from error
        try:
            routed = await ctx.broker.publish_batch(
                messages, exchange=exchange, mandatory=arguments.mandatory, delay=arguments.delay
            )
        except ConveyorError as error:
            raise sent.failed(error, batch[0][0], batch[-1][0]) from error
        unroutable += routed.count(0)
        sent.add(len(messages))
    sent.progress.done()
    target = f"queue {routing_key!r}" if exchange == "" else f"exchange {exchange!r}"
    if ctx.json:
        print_json({"published": sent.count, "unroutable": unroutable, "exchange": exchange})
    else:
        dropped = f" ({unroutable} reached no queue and were dropped)" if unroutable else ""
        note(f"published {plural(sent.count, 'message')} to {target}{dropped}")
    return 0


def _record(ctx: Context, line: str) -> ProducerRecord:
    arguments = ctx.arguments
    key: str | None = None
    value = line
    if arguments.key_separator:
        key, separator, value = line.partition(arguments.key_separator)
        if not separator:
            raise ConfigError(f"no key separator {arguments.key_separator!r} in the line")
    encoded = None if value == arguments.null_marker else value.encode()
    return ProducerRecord(
        encoded, None if key is None else key.encode(), arguments.headers, None, arguments.partition
    )


async def produce(ctx: Context) -> int:
    arguments = ctx.arguments
    topic = arguments.topic
    arguments.headers = key_values(arguments.header, "--header") or None
    count = (await ctx.broker.describe_topic(topic)).spec.partitions  # before stdin is read
    if arguments.partition is not None and not 0 <= arguments.partition < count:
        raise PartitionNotFound(topic, arguments.partition, count)
    producer = Producer(ctx.broker)
    sent = _Sent("produced")
    partitions: dict[int, int] = {}
    for batch in read_batches(sys.stdin, arguments.batch_size):
        records = []
        for number, line in batch:
            try:
                records.append(_record(ctx, line))
            except ConveyorError as error:
                raise sent.failed(error, number) from error
        try:
            metadata = await producer.send_batch(topic, records)
        except ConveyorError as error:
            raise sent.failed(error, batch[0][0], batch[-1][0]) from error
        for landed in metadata:
            partitions[landed.partition] = partitions.get(landed.partition, 0) + 1
        sent.add(len(records))
    sent.progress.done()
    if ctx.json:
        print_json({"topic": topic, "produced": sent.count, "partitions": partitions})
    else:
        note(f"produced {plural(sent.count, 'record')} to topic {topic!r}")
    return 0
