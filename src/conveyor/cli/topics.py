"""``conveyor topics create|list|describe|alter|delete``, as kafka-topics does them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from conveyor.brokers.stream_types import TopicConfig, TopicInfo, TopicSpec
from conveyor.brokers.types import as_float
from conveyor.cli.common import (
    Context,
    UsageError,
    add_command,
    add_group,
    argument_type,
    key_values,
    parse_duration,
    parse_size,
    positive_int,
)
from conveyor.cli.output import (
    Column,
    duration,
    fields,
    number,
    plural,
    print_json,
    show,
    table,
    text,
)
from conveyor.errors import ConfigError


def add_parser(commands: Any) -> None:
    topics = add_group(commands, "topics", "create, list, describe, alter and delete topics")
    count = argument_type(positive_int)
    config_help = f"KEY=VALUE, repeatable; keys: {', '.join(CONFIG_KEYS)}"
    create = add_command(topics, "create", create_topic, "create a topic", creates=True)
    create.add_argument("name")
    create.add_argument("--partitions", type=count, default=1, metavar="N", help="default 1")
    create.add_argument("--config", action="append", metavar="KEY=VALUE", help=config_help)
    create.add_argument(
        "--replication-factor",
        type=count,
        metavar="N",
        help="copies of each partition (default: the cluster's)",
    )
    add_command(topics, "list", list_topics, "topics with their size and retention")
    describe = add_command(topics, "describe", describe_topic, "a topic's config and partitions")
    describe.add_argument("name")
    alter = add_command(topics, "alter", alter_topic, "add partitions or change the config")
    alter.add_argument("name")
    alter.add_argument("--partitions", type=count, metavar="N", help="the new, larger count")
    alter.add_argument("--config", action="append", metavar="KEY=VALUE", help=config_help)
    alter.add_argument(
        "--delete-config", action="append", metavar="KEY", help="set KEY back to its default"
    )
    delete = add_command(topics, "delete", delete_topic, "delete a topic and its records")
    delete.add_argument("name")


def _unlimited(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        return None if text.lower() in ("none", "forever", "unlimited", "-1") else parse(text)

    return convert


_PARSERS: dict[str, Callable[[str], Any]] = {
    "retention": _unlimited(parse_duration),
    "retention_bytes": _unlimited(parse_size),
    "cleanup_policy": str,
    "max_message_bytes": parse_size,
    "delete_retention": parse_duration,
    "min_compaction_lag": parse_duration,
}
CONFIG_KEYS = tuple(_PARSERS)


def _key(key: str) -> str:
    name = key.replace("-", "_").replace(".", "_")
    if name not in _PARSERS:
        raise ConfigError(f"unknown topic config {key!r}; valid keys: {', '.join(CONFIG_KEYS)}")
    return name


def topic_config(pairs: Mapping[str, str], base: TopicConfig | None = None) -> TopicConfig:
    """``base`` (default: the defaults) with the given ``key=value`` changes."""
    values = {}
    for key, value in pairs.items():
        name = _key(key)
        try:
            values[name] = _PARSERS[name](value)
        except ConfigError as error:
            raise ConfigError(f"--config {key}: {error}") from None
    return dataclasses.replace(base or TopicConfig(), **values)


def _config_text(config: TopicConfig) -> str:
    shown = {
        "retention": duration(as_float(config.retention)) if config.retention else "forever",
        "retention_bytes": text(config.retention_bytes),
        "cleanup_policy": config.cleanup_policy.value,
        "max_message_bytes": str(config.max_message_bytes),
        "delete_retention": duration(as_float(config.delete_retention)),
        "min_compaction_lag": duration(as_float(config.min_compaction_lag)),
    }
    return ", ".join(f"{key}={value}" for key, value in shown.items())


def _info_json(info: TopicInfo) -> dict[str, Any]:
    return {
        "name": info.spec.name,
        "partitions": info.spec.partitions,
        "replication_factor": info.spec.replication_factor,
        "by_partition": [dataclasses.asdict(p) for p in info.partitions],
        "records": info.records,
        "bytes": sum(p.bytes for p in info.partitions),
        "config": info.spec.config.to_json(),
    }


async def create_topic(ctx: Context) -> int:
    arguments = ctx.arguments
    config = topic_config(key_values(arguments.config, "--config"))
    spec = TopicSpec(arguments.name, arguments.partitions, config, arguments.replication_factor)
    existed = spec.name in {s.name for s in await ctx.broker.list_topics()}
    await ctx.broker.create_topic(spec)
    verb = "topic exists" if existed else "created topic"
    return ctx.done(
        {
            "name": spec.name,
            "created": not existed,
            "partitions": spec.partitions,
            "config": config.to_json(),
        },
        f"{verb} {spec.name!r} with {spec.partitions} partitions",
    )


async def list_topics(ctx: Context) -> int:
    rows = []
    for spec in await ctx.broker.list_topics():
        info = _info_json(await ctx.broker.describe_topic(spec.name))
        del info["by_partition"]
        rows.append(info)
    show(
        ctx.json,
        rows,
        [
            Column("name", "name"),
            number("partitions", "partitions"),
            number("records", "records"),
            number("bytes", "bytes"),
            Column("cleanup", "config", lambda c: c["cleanup_policy"]),
            Column(
                "retention",
                "config",
                lambda c: duration(c["retention"]) if c["retention"] else "forever",
            ),
        ],
    )
    return 0


async def describe_topic(ctx: Context) -> int:
    info = await ctx.broker.describe_topic(ctx.arguments.name)
    data = _info_json(info)
    if ctx.json:
        print_json(data)
        return 0
    print(
        fields(
            [
                ("topic", info.spec.name),
                ("partitions", str(info.spec.partitions)),
                ("replication", str(info.spec.replication_factor or "-")),
                ("records", f"{data['records']} ({data['bytes']} bytes)"),
                ("config", _config_text(info.spec.config)),
            ]
        )
    )
    print()
    columns = [number(name, name) for name in ("partition", "start", "end", "records", "bytes")]
    print(table(columns, data["by_partition"]))
    return 0


async def alter_topic(ctx: Context) -> int:
    arguments = ctx.arguments
    if not (arguments.partitions or arguments.config or arguments.delete_config):
        raise UsageError("topics alter needs --partitions, --config or --delete-config")
    current = (await ctx.broker.describe_topic(arguments.name)).spec
    config = None
    if arguments.config or arguments.delete_config:
        reset = {
            _key(key): getattr(TopicConfig(), _key(key)) for key in arguments.delete_config or ()
        }
        config = dataclasses.replace(
            topic_config(key_values(arguments.config, "--config"), current.config), **reset
        )
    spec = await ctx.broker.alter_topic(
        arguments.name, partitions=arguments.partitions, config=config
    )
    return ctx.done(
        {"name": spec.name, "partitions": spec.partitions, "config": spec.config.to_json()},
        f"altered topic {spec.name!r}: {spec.partitions} partitions, {_config_text(spec.config)}",
    )


async def delete_topic(ctx: Context) -> int:
    name = ctx.arguments.name
    info = await ctx.broker.describe_topic(name)
    await ctx.broker.delete_topic(name)
    return ctx.done(
        {"name": name, "deleted": True, "records": info.records},
        f"deleted topic {name!r} and its {plural(info.records, 'record')}",
    )
