"""``conveyor bench SUITE`` (in a source checkout) and ``conveyor demo``: other programs,
run as children so that their output, exit code and Ctrl-C are their own."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from typing import Any

from conveyor.errors import ConfigError


def add_parser(commands: Any) -> None:
    bench: argparse.ArgumentParser = commands.add_parser(
        "bench",
        help="run a benchmark suite (python -m bench; source checkouts only)",
        description="Run `python -m bench SUITE` from a source checkout of Conveyor.",
    )
    bench.add_argument("suite", help="queues, tasks or streams")
    bench.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run")
    bench.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    bench.add_argument("--repeat", type=int, metavar="N", help="run N times, report medians")
    bench.set_defaults(handler=run_bench)
    demo: argparse.ArgumentParser = commands.add_parser(
        "demo",
        help="run the demo (python -m conveyor.demo; arguments are passed on)",
        description="Run `python -m conveyor.demo`; every argument is passed on to it.",
        add_help=False,
    )
    demo.set_defaults(handler=run_demo, passthrough=True)


def _bench_available() -> bool:
    if "" not in sys.path:
        sys.path.insert(0, "")  # `python -m bench` finds it in the working directory
    try:
        return importlib.util.find_spec("bench.harness") is not None
    except ImportError:
        return False


def run_bench(arguments: argparse.Namespace) -> int:
    if not _bench_available():
        raise ConfigError(
            "the bench package is not importable: benchmarks run from a source checkout of "
            "Conveyor; cd to it and run conveyor bench again"
        )
    command = [sys.executable, "-m", "bench", arguments.suite]
    if arguments.quick:
        command.append("--quick")
    if arguments.json:
        command += ["--json", arguments.json]
    if arguments.repeat is not None:
        command += ["--repeat", str(arguments.repeat)]
    return _run(command)


def run_demo(arguments: argparse.Namespace) -> int:
    return _run([sys.executable, "-m", "conveyor.demo", *arguments.extra])


def _run(command: list[str]) -> int:
    """Run the child to its end: Ctrl-C reaches it too, and it decides how to stop."""
    child = subprocess.Popen(command)
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            continue
