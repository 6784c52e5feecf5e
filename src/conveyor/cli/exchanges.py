"""``conveyor exchanges list|show|declare|delete`` and ``conveyor bind|unbind``."""

from __future__ import annotations

import json
from typing import Any

from conveyor.brokers.types import Binding, ExchangeSpec, ExchangeStats
from conveyor.cli.common import Context, add_command, add_group, key_values
from conveyor.cli.output import Column, fields, number, print_json, show, table
from conveyor.errors import ConfigError
from conveyor.routing import ExchangeType

DEFAULT = "(default)"


def add_parser(commands: Any) -> None:
    exchanges = add_group(commands, "exchanges", "list, inspect, declare and delete exchanges")
    listing = add_command(exchanges, "list", list_exchanges, "exchanges with their bindings")
    listing.add_argument("names", nargs="*", metavar="NAME", help="only these exchanges")
    add_command(exchanges, "show", show_exchange, "one exchange and its bindings").add_argument(
        "name", help=f"the exchange; '' or {DEFAULT} for the default exchange"
    )
    declare = add_command(
        exchanges, "declare", declare_exchange, "create an exchange", creates=True
    )
    declare.add_argument("name")
    declare.add_argument(
        "--type", choices=[t.value for t in ExchangeType], default=ExchangeType.DIRECT.value
    )
    declare.add_argument(
        "--alternate-exchange", metavar="EXCHANGE", help="where unroutable messages go"
    )
    delete = add_command(
        exchanges, "delete", delete_exchange, "delete an exchange and its bindings"
    )
    delete.add_argument("name")
    for name, command, help in (
        ("bind", bind, "route messages from an exchange to a queue"),
        ("unbind", unbind, "remove a binding"),
    ):
        parser = add_command(commands, name, command, help)
        parser.add_argument("exchange")
        parser.add_argument("queue")
        parser.add_argument("--routing-key", default="", metavar="KEY", help="key or pattern")
        parser.add_argument(
            "--header",
            action="append",
            metavar="KEY=VALUE",
            help="headers exchanges: a header value to match (repeatable)",
        )
        parser.add_argument(
            "--match", choices=["all", "any"], help="headers exchanges: x-match (default all)"
        )


def _name(name: str) -> str:
    return "" if name == DEFAULT else name


def _row(stats: ExchangeStats) -> dict[str, Any]:
    return {
        "name": stats.exchange or DEFAULT,
        "type": stats.type,
        "bindings": None if stats.bindings is None else len(stats.bindings),
        "unroutable": stats.unroutable,
    }


async def list_exchanges(ctx: Context) -> int:
    names = [_name(n) for n in ctx.arguments.names]
    if not names:
        names = ["", *(spec.name for spec in await ctx.broker.list_exchanges())]
    rows = [_row(await ctx.broker.exchange_stats(name)) for name in names]
    columns = [
        Column("name", "name"),
        Column("type", "type"),
        number("bindings", "bindings"),
        number("unroutable", "unroutable"),
    ]
    show(ctx.json, rows, columns)
    return 0


def _binding(binding: Binding) -> dict[str, Any]:
    return {
        "queue": binding.queue,
        "routing_key": binding.routing_key,
        "arguments": dict(binding.arguments),
    }


async def show_exchange(ctx: Context) -> int:
    stats = await ctx.broker.exchange_stats(_name(ctx.arguments.name))
    bindings = [_binding(b) for b in stats.bindings or ()]
    if ctx.json:
        print_json({**_row(stats), "bindings": bindings})
        return 0
    print(
        fields(
            [
                ("exchange", stats.exchange or DEFAULT),
                ("type", "unknown" if stats.type is None else stats.type.value),
                (
                    "unroutable",
                    "unknown"
                    if stats.unroutable is None
                    else f"{stats.unroutable} messages dropped",
                ),
            ]
        )
    )
    print()
    arguments = Column("arguments", "arguments", lambda a: json.dumps(a) if a else "-")
    print(
        table([Column("queue", "queue"), Column("routing key", "routing_key"), arguments], bindings)
    )
    return 0


async def declare_exchange(ctx: Context) -> int:
    arguments = ctx.arguments
    spec = ExchangeSpec(arguments.name, arguments.type, arguments.alternate_exchange)
    await ctx.broker.declare_exchange(spec)
    return ctx.done(
        {"name": spec.name, "type": spec.type}, f"declared {spec.type.value} exchange {spec.name!r}"
    )


async def delete_exchange(ctx: Context) -> int:
    name = ctx.arguments.name
    await ctx.broker.delete_exchange(name)
    return ctx.done({"name": name, "deleted": True}, f"deleted exchange {name!r} and its bindings")


def _binding_from(ctx: Context) -> Binding:
    arguments = ctx.arguments
    headers: dict[str, Any] = dict(key_values(arguments.header, "--header"))
    if arguments.match:
        if not headers:
            raise ConfigError("--match goes with --header KEY=VALUE (headers exchanges)")
        headers["x-match"] = arguments.match
    return Binding(arguments.exchange, arguments.queue, arguments.routing_key, headers)


async def _bound(ctx: Context, binding: Binding) -> bool:
    stats = await ctx.broker.exchange_stats(binding.exchange)
    return any(
        (b.queue, b.routing_key, dict(b.arguments))
        == (binding.queue, binding.routing_key, dict(binding.arguments))
        for b in stats.bindings or ()
    )


def _describe(binding: Binding) -> str:
    key = f" with routing key {binding.routing_key!r}" if binding.routing_key else ""
    headers = f" matching {dict(binding.arguments)}" if binding.arguments else ""
    return f"{binding.exchange!r} -> {binding.queue!r}{key}{headers}"


async def bind(ctx: Context) -> int:
    binding = _binding_from(ctx)
    await ctx.broker.bind(binding)
    return ctx.done(
        {"exchange": binding.exchange, **_binding(binding), "bound": True},
        f"bound {_describe(binding)}",
    )


async def unbind(ctx: Context) -> int:
    binding = _binding_from(ctx)
    if not await _bound(ctx, binding):
        raise ConfigError(f"there is no binding {_describe(binding)}; nothing was changed")
    await ctx.broker.unbind(binding)
    return ctx.done(
        {"exchange": binding.exchange, **_binding(binding), "bound": False},
        f"unbound {_describe(binding)}",
    )
