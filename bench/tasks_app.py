"""The Conveyor app of the ``tasks`` suite: no-op tasks, a marker and a latency probe.

Workers load it as ``python -m conveyor worker bench.tasks_app:app``; the broker URL comes
from ``CONVEYOR_BENCH_URL`` (set by the suite for each fresh database). The parent process
builds its own App on the same URL with ``build(url)``, so both sides register the same
task names.

``rabbitmq_app`` is the same App on RabbitMQ with job records in Redis, for the suite's
``rabbitmq_e2e_per_s``: a server is shared, so its queue and key prefix come per run from
``CONVEYOR_BENCH_QUEUE`` and ``CONVEYOR_BENCH_RESULTS_URL``. It is built on first access,
so the embedded workers never build it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from conveyor.app import App

URL_ENV = "CONVEYOR_BENCH_URL"
QUEUE = "bench"
RABBITMQ_URL_ENV = "CONVEYOR_BENCH_RABBITMQ_URL"
RESULTS_URL_ENV = "CONVEYOR_BENCH_RESULTS_URL"
QUEUE_ENV = "CONVEYOR_BENCH_QUEUE"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
RESULTS_URL = "redis://127.0.0.1:6379/15?prefix=conveyor-bench-manual:"

NOOP = "bench.noop"
ASYNC_NOOP = "bench.anoop"
MARK = "bench.mark"
PROBE = "bench.probe"


def noop() -> None:
    """The sync no-op, as the peers' tasks are (it runs in the worker's thread pool)."""


async def anoop() -> None:
    """The async no-op (it runs on the worker's event loop)."""


def mark(path: str) -> None:
    """Write when this ran (``time.time()``) to ``path``: the start of a timed drain."""
    Path(path).write_text(repr(time.time()))


def probe(enqueued: float) -> float:
    """Milliseconds from ``enqueued`` (the producer's ``time.time()``) to this call."""
    return (time.time() - enqueued) * 1000


def build(url: str) -> App:
    """An App on ``url`` with the suite's tasks under fixed names, none retried."""
    app = App(url, default_queue=QUEUE)
    app.task(name=NOOP, max_retries=0)(noop)
    app.task(name=ASYNC_NOOP, max_retries=0)(anoop)
    app.task(name=MARK, max_retries=0)(mark)
    app.task(name=PROBE, max_retries=0)(probe)
    return app


app = build(os.environ.get(URL_ENV, "sqlite:///conveyor-bench.db?durability=normal"))


def build_rabbitmq(url: str, results_url: str, queue: str) -> App:
    """The App of ``build`` on a broker without a result store of its own (RabbitMQ),
    keeping job records at ``results_url``, with its tasks on ``queue``."""
    built = App(url, results_url=results_url, default_queue=queue)
    for name, function in ((NOOP, noop), (ASYNC_NOOP, anoop), (MARK, mark), (PROBE, probe)):
        built.task(name=name, max_retries=0)(function)
    return built


def __getattr__(name: str) -> App:
    """``rabbitmq_app``, built from the environment when a worker first loads it."""
    if name != "rabbitmq_app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    built = build_rabbitmq(
        os.environ.get(RABBITMQ_URL_ENV, RABBITMQ_URL),
        os.environ.get(RESULTS_URL_ENV, RESULTS_URL),
        os.environ.get(QUEUE_ENV, QUEUE),
    )
    globals()[name] = built
    return built
