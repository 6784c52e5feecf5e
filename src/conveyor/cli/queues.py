"""``conveyor queues list|show|declare|purge|delete``, as rabbitmqctl's queue commands."""

from __future__ import annotations

import time
from typing import Any

from conveyor.brokers.types import Overflow, QueueSpec, QueueStats
from conveyor.cli.common import (
    Context,
    add_command,
    add_group,
    argument_type,
    parse_duration,
    parse_size,
    positive_int,
)
from conveyor.cli.output import Column, duration, fields, number, plural, print_json, show, text
from conveyor.errors import ConfigError, QueueNotFound


def add_parser(commands: Any) -> None:
    queues = add_group(commands, "queues", "list, inspect, declare, purge and delete queues")
    add_command(queues, "list", list_queues, "queues with their depth by state")
    add_command(queues, "show", show_queue, "one queue's options and statistics").add_argument(
        "name"
    )
    declare = add_command(
        queues, "declare", declare_queue, "create a queue (no-op if it exists alike)", creates=True
    )
    declare.add_argument("name")
    count, seconds = argument_type(positive_int), argument_type(parse_duration)
    declare.add_argument("--max-priority", type=count, metavar="N", help="priorities 0..N")
    declare.add_argument("--message-ttl", type=seconds, metavar="DURATION")
    declare.add_argument("--expires", type=seconds, metavar="DURATION", help="delete when unused")
    declare.add_argument("--max-length", type=count, metavar="N")
    declare.add_argument("--max-bytes", type=argument_type(parse_size), metavar="SIZE")
    declare.add_argument("--overflow", choices=[o.value for o in Overflow])
    declare.add_argument("--dead-letter-exchange", metavar="EXCHANGE", help="'' is the default")
    declare.add_argument("--dead-letter-routing-key", metavar="KEY")
    declare.add_argument("--lease-timeout", type=seconds, metavar="DURATION")
    declare.add_argument("--delivery-limit", type=count, metavar="N")
    purge = add_command(queues, "purge", purge_queue, "delete a queue's waiting messages")
    purge.add_argument("name")
    delete = add_command(queues, "delete", delete_queue, "delete a queue and its messages")
    delete.add_argument("name")
    delete.add_argument("--if-empty", action="store_true", help="refuse if it holds messages")


def dead_letter_target(spec: QueueSpec) -> str | None:
    """Where the queue's dead letters go: ``queue`` via the default exchange, or ``x/key``."""
    if spec.dead_letter_exchange is None:
        return None
    if spec.dead_letter_exchange == "":
        return spec.dead_letter_routing_key or "(default)"
    if spec.dead_letter_routing_key is None:
        return spec.dead_letter_exchange
    return f"{spec.dead_letter_exchange}/{spec.dead_letter_routing_key}"


async def queue_spec(ctx: Context, name: str) -> QueueSpec:
    for spec in await ctx.broker.list_queues():
        if spec.name == name:
            return spec
    raise QueueNotFound(name)


async def _workers_by_queue(ctx: Context) -> dict[str, int] | None:
    """Live workers per queue they take from, where the App has a result store."""
    if not ctx.app.has_results(ctx.broker):
        return None
    counts: dict[str, int] = {}
    now = time.time()
    for worker in await (await ctx.results()).list_workers():
        if not worker.lost(now):
            for queue in worker.queues:
                counts[queue] = counts.get(queue, 0) + 1
    return counts


def _row(spec: QueueSpec, stats: QueueStats, workers: dict[str, int] | None) -> dict[str, Any]:
    return {
        "name": spec.name,
        "ready": stats.ready,
        "unacked": stats.unacked,
        "delayed": stats.delayed,
        "bytes": stats.bytes,
        "oldest_age": stats.oldest_age,
        "dead_letter_target": dead_letter_target(spec),
        "workers": None if workers is None else workers.get(spec.name, 0),
        "published": stats.published,
        "delivered": stats.delivered,
        "acked": stats.acked,
        "dead_lettered": stats.dead_lettered,
        "options": spec.options(),
    }


async def list_queues(ctx: Context) -> int:
    workers = await _workers_by_queue(ctx)
    rows = [
        _row(spec, await ctx.broker.queue_stats(spec.name), workers)
        for spec in await ctx.broker.list_queues()
    ]
    show(
        ctx.json,
        rows,
        [
            Column("name", "name"),
            number("ready", "ready"),
            number("unacked", "unacked"),
            number("delayed", "delayed"),
            Column("oldest", "oldest_age", lambda age: duration(age, whole=True)),
            Column("dead letters to", "dead_letter_target"),
            number("workers", "workers"),
        ],
    )
    return 0


async def show_queue(ctx: Context) -> int:
    spec = await queue_spec(ctx, ctx.arguments.name)
    row = _row(spec, await ctx.broker.queue_stats(spec.name), await _workers_by_queue(ctx))
    if ctx.json:
        print_json(row)
        return 0
    options = ", ".join(f"{k}={text(v) if v != '' else repr(v)}" for k, v in row["options"].items())
    counters = ("published", "delivered", "acked", "dead_lettered")
    print(
        fields(
            [
                ("queue", spec.name),
                ("options", options or "(defaults)"),
                ("dead letters to", text(row["dead_letter_target"])),
                ("ready", str(row["ready"])),
                ("unacked", str(row["unacked"])),
                ("delayed", str(row["delayed"])),
                ("bytes", str(row["bytes"])),
                ("oldest", duration(row["oldest_age"], whole=True)),
                ("workers", text(row["workers"])),
                ("lifetime", ", ".join(f"{c.replace('_', ' ')} {row[c]}" for c in counters)),
            ]
        )
    )
    return 0


_DECLARE_OPTIONS = (
    "max_priority",
    "message_ttl",
    "expires",
    "max_length",
    "max_bytes",
    "overflow",
    "dead_letter_exchange",
    "dead_letter_routing_key",
    "lease_timeout",
    "delivery_limit",
)


async def declare_queue(ctx: Context) -> int:
    arguments = ctx.arguments
    options = {
        key: getattr(arguments, key)
        for key in _DECLARE_OPTIONS
        if getattr(arguments, key) is not None
    }
    spec = QueueSpec.from_options(arguments.name, options)
    existed = any(s.name == spec.name for s in await ctx.broker.list_queues())
    await ctx.broker.declare_queue(spec)
    return ctx.done(
        {"name": spec.name, "created": not existed, "options": spec.options()},
        f"{'queue exists' if existed else 'declared queue'} {spec.name!r}",
    )


async def purge_queue(ctx: Context) -> int:
    name = ctx.arguments.name
    purged = await ctx.broker.purge_queue(name)
    leased = (await ctx.broker.queue_stats(name)).unacked
    kept = f"; {plural(leased, 'leased message')} stay until settled" if leased else ""
    return ctx.done(
        {"name": name, "purged": purged, "unacked": leased},
        f"purged {plural(purged, 'message')} from {name!r}{kept}",
    )


async def delete_queue(ctx: Context) -> int:
    name = ctx.arguments.name
    if ctx.arguments.if_empty:
        depth = (await ctx.broker.queue_stats(name)).depth
        if depth:
            raise ConfigError(
                f"queue {name!r} holds {plural(depth, 'message')} and --if-empty was given; "
                "nothing was deleted"
            )
    deleted = await ctx.broker.delete_queue(name)
    return ctx.done(
        {"name": name, "deleted": deleted},
        f"deleted queue {name!r} and its {plural(deleted, 'message')}",
    )
