"""A supervisor with autoscale rules the CLI cannot set: ``python -m tests.reliability.supervise``.

``conveyor worker --autoscale MIN:MAX`` keeps AutoscaleRules' default depths (50/500), a
30-second cooldown and a 2-second check interval; a test that watches the pool shrink
needs them small. This builds the same Supervisor the CLI builds, with the rules given,
serving ``tests.reliability.app:app`` (so its children are real ``conveyor worker``
processes) and exits with its return code.
"""

from __future__ import annotations

import argparse
import asyncio

from conveyor.worker.autoscale import AutoscaleRules
from conveyor.worker.supervisor import Supervisor, WorkerOptions
from tests.reliability.app import app

APP_SPEC = "tests.reliability.app:app"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.supervise")
    parser.add_argument("--minimum", type=int, required=True)
    parser.add_argument("--maximum", type=int, required=True)
    parser.add_argument("--low", type=int, required=True)
    parser.add_argument("--high", type=int, required=True)
    parser.add_argument("--cooldown", type=float, required=True)
    parser.add_argument("--check-interval", type=float, required=True)
    parser.add_argument("--queues", default="default")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--prefetch", type=int, default=None)
    parser.add_argument("--grace", type=float, default=30.0)
    arguments = parser.parse_args()
    options = WorkerOptions(
        APP_SPEC,
        tuple(name for name in arguments.queues.split(",") if name),
        arguments.concurrency,
        arguments.prefetch,
        arguments.grace,
    )
    rules = AutoscaleRules(
        arguments.minimum,
        arguments.maximum,
        low=arguments.low,
        high=arguments.high,
        cooldown=arguments.cooldown,
    )
    supervisor = Supervisor(
        app, options, processes=1, autoscale=rules, check_interval=arguments.check_interval
    )
    return asyncio.run(supervisor.run())


if __name__ == "__main__":
    raise SystemExit(main())
