"""What every operator command shares: where the broker is, how it connects, option parsing.

Each admin command takes ``--broker URL`` (default: ``$CONVEYOR_BROKER_URL``, else
``sqlite:///conveyor.db``) or ``--app MODULE:APP`` (that App's broker and tasks), and
``--json``. Without ``--json`` it first names the broker on stderr, as its location (a
``sqlite:///`` file as an absolute path), so that a store in another directory is noticed.

A command is an ``async def command(ctx) -> int``; ``add_command`` registers it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conveyor.app import App
from conveyor.brokers import open_broker
from conveyor.brokers.base import Broker
from conveyor.brokers.results import ResultStore
from conveyor.cli.output import print_json
from conveyor.errors import ConfigError
from conveyor.settings import mask_url

DEFAULT_BROKER_URL = "sqlite:///conveyor.db"
BROKER_URL_ENV = "CONVEYOR_BROKER_URL"
RESULTS_URL_ENV = "CONVEYOR_RESULTS_URL"


class UsageError(Exception):
    """The command line asks for something impossible: exit code 2, like argparse's errors."""


@dataclass(slots=True)
class Context:
    """One run of an admin command: its arguments, the App and its connected broker."""

    arguments: argparse.Namespace
    app: App
    broker: Broker
    from_app: bool

    @property
    def json(self) -> bool:
        return bool(self.arguments.json)

    async def results(self) -> ResultStore:
        """The App's result store (the broker's own unless ``--results`` names one)."""
        return await self.app.aresults()

    def done(self, data: Any, line: str) -> int:
        """Report a finished change: ``data`` under --json, else ``line``; exit status 0."""
        if self.json:
            print_json(data)
        else:
            print(line)
        return 0


Command = Callable[[Context], Awaitable[int]]


def admin_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    source = options.add_mutually_exclusive_group()
    source.add_argument(
        "--broker",
        metavar="URL",
        help=f"broker URL (default: ${BROKER_URL_ENV}, else {DEFAULT_BROKER_URL})",
    )
    source.add_argument(
        "--app", metavar="MODULE:APP", help="use this App's broker URL and task registry"
    )
    options.add_argument(
        "--results",
        metavar="URL",
        help=f"result store URL (default: ${RESULTS_URL_ENV}, else the broker's own)",
    )
    options.add_argument("--json", action="store_true", help="print JSON instead of a table")
    options.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    return options


def add_command(
    commands: Any,
    name: str,
    command: Command,
    help: str,
    *,
    creates: bool = False,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Register an admin command. Only ``creates`` commands may start a new database file."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        parents=[admin_options()],
        help=help,
        description=description or help,
    )
    parser.set_defaults(handler=_handler(command, creates))
    return parser


def add_group(commands: Any, name: str, help: str) -> Any:
    """A command with subcommands (``conveyor queues list``)."""
    group: argparse.ArgumentParser = commands.add_parser(name, help=help, description=help)
    return group.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")


def _handler(command: Command, creates: bool) -> Callable[[argparse.Namespace], int]:
    def handler(arguments: argparse.Namespace) -> int:
        from conveyor.cli import load_app

        from_app = bool(arguments.app)
        if from_app:
            app = load_app(arguments.app)
        else:
            app = App(
                arguments.broker or os.environ.get(BROKER_URL_ENV) or DEFAULT_BROKER_URL,
                results_url=arguments.results or os.environ.get(RESULTS_URL_ENV) or None,
            )
        if not creates:
            check_store_exists(app)
        return asyncio.run(_run(command, arguments, app, from_app))

    return handler


async def _run(command: Command, arguments: argparse.Namespace, app: App, from_app: bool) -> int:
    try:
        broker = await app.abroker()
        if not arguments.json:
            print(f"conveyor: broker {broker.location}", file=sys.stderr)
        return await command(Context(arguments, app, broker, from_app))
    finally:
        await app.aclose()


def check_store_exists(app: App) -> None:
    """Refuse to read from a store that is not there (opening would create it empty)."""
    missing = open_broker(app.broker_url).missing_store()
    if missing is not None:
        raise ConfigError(
            f"there is no {missing} (broker {mask_url(app.broker_url)}); check --broker or "
            f"${BROKER_URL_ENV}, or run from the directory that holds it"
        )


# option values

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|mb|gb|kib|mib|gib)?\s*$", re.IGNORECASE)
_BYTES = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_duration(text: str) -> float:
    """Seconds from ``30``, ``1.5``, ``500ms``, ``30s``, ``5m``, ``2h`` or ``7d``."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{text!r} is not a duration; write seconds, or e.g. 500ms, 30s, 5m, 7d")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def parse_size(text: str) -> int:
    """Bytes from ``1048576``, ``64KiB``, ``10MB`` or ``1GiB``."""
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(f"{text!r} is not a size; write bytes, or e.g. 64KiB, 10MB, 1GiB")
    return int(match.group(1)) * _BYTES[(match.group(2) or "b").lower()]


def parse_datetime(text: str) -> float:
    """An ISO 8601 date-time as epoch seconds; without a zone it is local time."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{text!r} is not an ISO 8601 date-time; write e.g. 2024-05-01T12:00:00Z, "
            "2024-05-01T14:00:00+02:00 or 2024-05-01 (local time)"
        ) from None
    return moment.timestamp()


def argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type=`` from a parser that raises ConfigError (a usage error, exit 2)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = parse.__name__.removeprefix("parse_")
    return convert


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{text!r} is not a positive whole number")
    return value


def whole_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{text!r} is not a whole number (0 or more)")
    return value


def add_paging(command: Any, default_limit: int) -> None:
    """``--limit`` and ``--offset``, as every listing takes them (and the API's pages)."""
    command.add_argument(
        "--limit",
        type=argument_type(positive_int),
        default=default_limit,
        metavar="N",
        help=f"at most N (default {default_limit})",
    )
    command.add_argument(
        "--offset", type=argument_type(whole_number), default=0, metavar="N", help="skip N"
    )


def duration_type(text: str) -> float:
    return float(argument_type(parse_duration)(text))


def key_values(pairs: Sequence[str] | None, option: str) -> dict[str, str]:
    """``["k=v", "a=b,c=d"]`` as a dict; commas separate pairs, as Kafka's tools take them."""
    result: dict[str, str] = {}
    for pair in pairs or ():
        last = None
        for item in pair.split(","):
            key, equals, value = item.partition("=")
            if not equals and last is not None:  # a list value: cleanup_policy=compact,delete
                result[last] += f",{item.strip()}"
                continue
            if not equals or not key.strip():
                raise ConfigError(f"{option} {item!r} is not KEY=VALUE")
            last = key.strip()
            result[last] = value.strip()
    return result
