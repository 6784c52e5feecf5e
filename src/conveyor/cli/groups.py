"""``conveyor groups list|describe|reset-offsets|delete``, as kafka-consumer-groups does them.

``reset-offsets`` prints its plan and changes nothing unless ``--execute`` is given; it is
an admin commit, which the broker refuses while the group has live members.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from conveyor.assignors import TopicPartition
from conveyor.brokers.stream_types import GroupInfo, OffsetCommit
from conveyor.cli.common import (
    Context,
    add_command,
    add_group,
    argument_type,
    parse_datetime,
)
from conveyor.cli.output import Column, ago, duration, fields, note, number, print_json, show, table
from conveyor.errors import BrokerError, ConfigError, MemberFenced, PartitionNotFound


def add_parser(commands: Any) -> None:
    groups = add_group(commands, "groups", "list, describe, reset and delete consumer groups")
    add_command(groups, "list", list_groups, "consumer groups with their state and lag")
    describe = add_command(groups, "describe", describe_group, "members, offsets and lag")
    describe.add_argument("group")
    reset = add_command(
        groups, "reset-offsets", reset_offsets, "move a group's committed offsets (dry run)"
    )
    reset.add_argument("group")
    which = reset.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--topic",
        action="append",
        metavar="TOPIC[:P,...]",
        help="a topic, or some of its partitions (repeatable)",
    )
    which.add_argument("--all-topics", action="store_true", help="every topic the group has")
    to = reset.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true", help="the log start")
    to.add_argument("--to-latest", action="store_true", help="the log end")
    to.add_argument(
        "--to-datetime",
        type=argument_type(parse_datetime),
        metavar="ISO8601",
        help="the first record at or after it (no zone: local time)",
    )
    to.add_argument("--to-offset", type=_offset, metavar="N", help="this offset (clamped)")
    to.add_argument("--shift-by", type=int, metavar="N", help="the committed offset plus N")
    mode = reset.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the plan (the default)")
    mode.add_argument("--execute", action="store_true", help="commit the new offsets")
    add_command(groups, "delete", delete_group, "forget a group and its offsets").add_argument(
        "group"
    )


def _offset(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not an offset (a whole number >= 0)")
    return int(text)


async def _group(ctx: Context, name: str) -> GroupInfo:
    if name not in await ctx.broker.list_groups():
        raise ConfigError(
            f"there is no consumer group {name!r}; see the groups with: conveyor groups list"
        )
    return await ctx.broker.describe_group(name)


def _summary(info: GroupInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "state": info.state,
        "members": len(info.members),
        "generation": info.generation,
        "assignor": info.assignor,
        "topics": sorted({p.topic for p in info.partitions}),
        "lag": info.lag,
    }


async def list_groups(ctx: Context) -> int:
    rows = [_summary(await ctx.broker.describe_group(n)) for n in await ctx.broker.list_groups()]
    show(
        ctx.json,
        rows,
        [
            Column("group", "name"),
            Column("state", "state"),
            number("members", "members"),
            number("generation", "generation"),
            Column("topics", "topics"),
            number("lag", "lag"),
        ],
    )
    return 0


async def describe_group(ctx: Context) -> int:
    info = await _group(ctx, ctx.arguments.group)
    partitions = [
        {
            "topic": p.topic,
            "partition": p.partition,
            "committed": p.committed,
            "end": p.end,
            "lag": p.lag,
            "owner": p.owner,
        }
        for p in info.partitions
    ]
    members = [
        {
            "member_id": m.member_id,
            "topics": list(m.topics),
            "generation": m.generation,
            "last_heartbeat": m.last_heartbeat,
            "session_timeout": m.session_timeout,
            "partitions": [f"{tp.topic}:{tp.partition}" for tp in m.owned],
        }
        for m in info.members
    ]
    if ctx.json:
        print_json({**_summary(info), "members": members, "partitions": partitions})
        return 0
    summary = _summary(info)
    print(fields([(key, str(summary[key])) for key in ("name", "state", "generation", "lag")]))
    print()
    print(
        table(
            [
                Column("topic", "topic"),
                number("partition", "partition"),
                number("current-offset", "committed"),
                number("log-end-offset", "end"),
                number("lag", "lag"),
                Column("consumer-id", "owner"),
            ],
            partitions,
        )
    )
    if members:
        now = time.time()
        print()
        print(
            table(
                [
                    Column("member", "member_id"),
                    Column("topics", "topics"),
                    number("generation", "generation"),
                    Column("heartbeat", "last_heartbeat", lambda t: ago(t, now)),
                    Column("session", "session_timeout", duration),
                    Column("partitions", "partitions"),
                ],
                members,
            )
        )
    return 0


async def _partitions(ctx: Context, info: GroupInfo) -> list[TopicPartition]:
    """The partitions named by --topic (``T`` or ``T:0,2``), or all the group has."""
    if ctx.arguments.all_topics:
        chosen = sorted({TopicPartition(p.topic, p.partition) for p in info.partitions})
        if not chosen:
            raise ConfigError(
                f"group {info.name!r} has no offsets or partitions yet; name them with --topic"
            )
        return chosen
    chosen = []
    for spec in ctx.arguments.topic:
        topic, _, numbers = spec.partition(":")
        count = (await ctx.broker.describe_topic(topic)).spec.partitions
        if not numbers:
            chosen += [TopicPartition(topic, p) for p in range(count)]
            continue
        for number_text in numbers.split(","):
            if not number_text.strip().isdigit():
                raise ConfigError(f"--topic {spec!r}: {number_text!r} is not a partition number")
            partition = int(number_text)
            if partition >= count:
                raise PartitionNotFound(topic, partition, count)
            chosen.append(TopicPartition(topic, partition))
    return sorted(set(chosen))


async def _targets(
    ctx: Context, partitions: list[TopicPartition], current: dict[TopicPartition, int]
) -> dict[TopicPartition, int]:
    arguments = ctx.arguments
    broker = ctx.broker
    if arguments.to_earliest:
        return await broker.list_offsets(partitions, at="earliest")
    if arguments.to_latest:
        return await broker.list_offsets(partitions, at="latest")
    if arguments.to_datetime is not None:
        return await broker.list_offsets(partitions, at=arguments.to_datetime)
    starts = await broker.list_offsets(partitions, at="earliest")
    ends = await broker.list_offsets(partitions, at="latest")
    wanted = {}
    for tp in partitions:
        if arguments.to_offset is not None:
            wanted[tp] = arguments.to_offset
        elif tp in current:
            wanted[tp] = current[tp] + arguments.shift_by
        else:
            raise ConfigError(
                f"group {arguments.group!r} has no committed offset for {tp.topic}:"
                f"{tp.partition} to shift from; use --to-earliest, --to-latest or --to-offset"
            )
    clamped = {tp: min(max(offset, starts[tp]), ends[tp]) for tp, offset in wanted.items()}
    moved = [f"{tp.topic}:{tp.partition}" for tp in partitions if clamped[tp] != wanted[tp]]
    if moved:
        note(f"note: clamped to the log range (start-end) for {', '.join(moved)}")
    return clamped


async def reset_offsets(ctx: Context) -> int:
    arguments = ctx.arguments
    group = arguments.group
    info = await _group(ctx, group)
    partitions = await _partitions(ctx, info)
    current = await ctx.broker.committed_offsets(group, partitions)
    targets = await _targets(ctx, partitions, current)
    if arguments.execute:
        try:
            await ctx.broker.commit_offsets(OffsetCommit(group, targets))
        except MemberFenced as error:
            live = len((await ctx.broker.describe_group(group)).members)
            raise BrokerError(
                f"group {group!r} has {live or 'live'} active member(s); stop them, or wait "
                "for their session timeout, before resetting its offsets; nothing was committed"
            ) from error
    elif info.members:
        note(
            f"note: group {group!r} has {len(info.members)} active member(s); --execute is "
            "refused until they stop"
        )
    rows = [
        {
            "group": group,
            "topic": tp.topic,
            "partition": tp.partition,
            "current": current.get(tp),
            "new": targets[tp],
        }
        for tp in partitions
    ]
    if ctx.json:
        print_json({"group": group, "executed": bool(arguments.execute), "offsets": rows})
    else:
        columns = [
            Column("group", "group"),
            Column("topic", "topic"),
            number("partition", "partition"),
            number("current-offset", "current"),
            number("new-offset", "new"),
        ]
        print(table(columns, rows))
    if not arguments.execute:
        note("dry run: nothing was committed; add --execute to commit these offsets")
    return 0


async def delete_group(ctx: Context) -> int:
    group = ctx.arguments.group
    await _group(ctx, group)
    await ctx.broker.delete_group(group)
    return ctx.done(
        {"name": group, "deleted": True}, f"deleted consumer group {group!r} and its offsets"
    )
