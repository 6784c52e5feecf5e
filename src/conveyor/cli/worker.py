"""``conveyor worker MODULE:APP``: run jobs, in one process or a supervised, scaled pool."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from typing import Any

from conveyor.cli import logs
from conveyor.errors import ConfigError
from conveyor.worker.autoscale import AutoscaleRules
from conveyor.worker.supervisor import Supervisor, WorkerOptions, run_worker


def add_parser(commands: Any) -> None:
    command: argparse.ArgumentParser = commands.add_parser(
        "worker", help="run jobs from queues", description=__doc__
    )
    command.add_argument("app", help="the App to serve, as MODULE:ATTRIBUTE")
    command.add_argument(
        "-Q",
        "--queues",
        nargs="+",
        action=QueueNames,
        default=[],
        metavar="QUEUE",
        help="queues in strict priority order: --queues high default low, -Q high,default, "
        "or repeated (default: every queue of the app's tasks, taken in turn)",
    )
    command.add_argument(
        "-c", "--concurrency", type=int, default=8, help="jobs at once per process"
    )
    command.add_argument("--processes", type=int, default=1, help="worker processes")
    command.add_argument("--prefetch", type=int, default=None, help="jobs leased ahead")
    command.add_argument("--grace", type=float, default=30.0, help="seconds to finish on stop")
    command.add_argument(
        "--autoscale", default=None, metavar="MIN:MAX", help="scale processes by queue depth"
    )
    command.add_argument(
        "--scale-at",
        default="50:500",
        metavar="LOW:HIGH",
        help="ready jobs below LOW run MIN processes, above HIGH run MAX (default 50:500)",
    )
    command.add_argument(
        "--scale-cooldown",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="least time between scaling down (default 30)",
    )
    command.add_argument(
        "--scale-interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how often the queue depth is checked (default 2)",
    )
    logs.add_options(command)
    command.set_defaults(handler=run)


def run(arguments: argparse.Namespace) -> int:
    from conveyor.cli import load_app

    logs.configure(arguments.log_level, arguments.log_format)
    app = load_app(arguments.app)
    queues = tuple(dict.fromkeys(arguments.queues))
    if arguments.processes < 1 or arguments.concurrency < 1:
        raise ConfigError("--processes and --concurrency must be at least 1")
    options = WorkerOptions(
        arguments.app, queues, arguments.concurrency, arguments.prefetch, arguments.grace
    )
    autoscale = _autoscale_rules(arguments) if arguments.autoscale else None
    if arguments.processes == 1 and autoscale is None:
        asyncio.run(run_worker(app, options))
        _exit_past_stuck_threads()
        return 0
    supervisor = Supervisor(
        app,
        options,
        processes=arguments.processes,
        autoscale=autoscale,
        check_interval=arguments.scale_interval,
    )
    return asyncio.run(supervisor.run())


class QueueNames(argparse.Action):
    """Queue names, space- or comma-separated; a repeated flag adds to the list."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        names = [name for value in values for name in value.split(",") if name]
        setattr(namespace, self.dest, [*getattr(namespace, self.dest, []), *names])


def _exit_past_stuck_threads() -> None:
    """A sync task cannot be interrupted; once its job is back in the queue, do not wait for
    its thread at interpreter exit (that wait would outlast a second SIGTERM)."""
    if threading.active_count() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _autoscale_rules(arguments: argparse.Namespace) -> AutoscaleRules:
    bounds = AutoscaleRules.parse(arguments.autoscale)
    low, _, high = arguments.scale_at.partition(":")
    if not (low.isdigit() and high.isdigit()):
        raise ConfigError(f"--scale-at {arguments.scale_at!r} is not LOW:HIGH, e.g. 50:500")
    return AutoscaleRules(
        bounds.minimum, bounds.maximum, int(low), int(high), arguments.scale_cooldown
    )
