"""The Conveyor app of the ``tasks`` suite: no-op tasks, a marker and a latency probe.

Workers load it as ``python -m conveyor worker bench.tasks_app:app``; the broker URL comes
from ``CONVEYOR_BENCH_URL`` (set by the suite for each fresh database). The parent process
builds its own App on the same URL with ``build(url)``, so both sides register the same
task names.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from conveyor.app import App

URL_ENV = "CONVEYOR_BENCH_URL"
QUEUE = "bench"

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
