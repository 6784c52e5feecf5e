"""``conveyor serve MODULE:APP``: the HTTP API, /metrics and /health (the ``server`` extra).

The API token comes from --token-file or CONVEYOR_API_TOKEN; without one the API is
read-only, and the server refuses to listen beyond loopback. Health thresholds come from
the --alert-* flags, then CONVEYOR_ALERT_<NAME> (e.g. CONVEYOR_ALERT_QUEUE_DEPTH).
"""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any

from conveyor.cli import logs
from conveyor.errors import ConfigError

if TYPE_CHECKING:
    from conveyor.server.settings import ServerSettings

ALERT_FLAGS: tuple[tuple[str, type, str, str], ...] = (
    ("queue_depth", int, "N", "ready messages in a queue (default 1000)"),
    ("dead_letters", int, "N", "messages in a dead-letter queue (default 100)"),
    ("error_rate", float, "RATE", "share of finished jobs that failed, 0-1 (default 0.05)"),
    ("error_window", float, "SECONDS", "how far the error rate looks back (default 300)"),
    ("error_min_jobs", int, "N", "finished jobs needed to judge the error rate (default 1)"),
    ("consumer_lag", int, "N", "records a consumer group lags behind (default 10000)"),
    ("oldest_age", float, "SECONDS", "wait of the oldest ready message (default 300)"),
)


def add_parser(commands: Any) -> None:
    command: argparse.ArgumentParser = commands.add_parser(
        "serve", help="serve the HTTP API, /metrics and /health", description=__doc__
    )
    command.add_argument("app", help="the App to serve, as MODULE:ATTRIBUTE")
    command.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    command.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    command.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help="file holding the API token (default: $CONVEYOR_API_TOKEN)",
    )
    command.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        metavar="BYTES",
        help="largest request body (default 1 MiB, or $CONVEYOR_API_MAX_BODY_BYTES)",
    )
    command.add_argument(
        "--allowed-host",
        action="append",
        dest="allowed_hosts",
        default=None,
        metavar="NAME",
        help="a name the server answers to, repeatable (default on loopback: loopback names; "
        "or $CONVEYOR_ALLOWED_HOSTS, comma-separated)",
    )
    logs.add_options(command)
    alerts = command.add_argument_group(
        "health thresholds", "/health reports degraded above any of these"
    )
    for name, kind, metavar, text in ALERT_FLAGS:
        flag = "--alert-" + name.replace("_", "-")
        alerts.add_argument(flag, dest=f"alert_{name}", type=kind, metavar=metavar, help=text)
    command.set_defaults(handler=run)


def settings_from(arguments: argparse.Namespace, environ: Mapping[str, str]) -> ServerSettings:
    """ServerSettings from the flags, then the environment."""
    from conveyor.server.settings import ServerSettings

    settings = ServerSettings.from_env(
        environ,
        token_file=arguments.token_file,
        alerts={name: getattr(arguments, f"alert_{name}") for name, *_ in ALERT_FLAGS},
        host=arguments.host,
        port=arguments.port,
        max_body_bytes=arguments.max_body_bytes,
        allowed_hosts=tuple(arguments.allowed_hosts) if arguments.allowed_hosts else None,
    )
    settings.check()
    return settings


def run(arguments: argparse.Namespace) -> int:
    from conveyor.cli import load_app

    try:
        import uvicorn

        from conveyor.server import create_server
    except ImportError as error:
        raise ConfigError(
            f"conveyor serve needs the server extra ({error}); install it with "
            "pip install 'conveyor[server]'"
        ) from None
    logs.configure(arguments.log_level, arguments.log_format)
    settings = settings_from(arguments, os.environ)
    server = create_server(load_app(arguments.app), settings)
    # uvicorn stops gracefully on SIGTERM/SIGINT, then raises the signal again for the
    # handler it found: make that a clean exit, as a stopped worker's is.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stopped)
    uvicorn.run(
        server,
        host=settings.host,
        port=settings.port,
        log_level=arguments.log_level,
        log_config=None,
    )
    return 0


def _stopped(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
