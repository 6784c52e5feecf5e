"""The Conveyor app of the ``http`` suite: one no-op task for ``POST /api/jobs`` to enqueue.

The server loads it as ``python -m conveyor serve bench.http_app:app``; the broker URL comes
from ``CONVEYOR_BENCH_HTTP_URL`` (the suite sets it to a fresh SQLite file per run). No worker
runs: the enqueued jobs stay queued.
"""

from __future__ import annotations

import os

from conveyor.app import App

URL_ENV = "CONVEYOR_BENCH_HTTP_URL"
QUEUE = "bench"
NOOP = "bench.noop"


def noop() -> None:
    """Does nothing; only enqueued."""


def build(url: str) -> App:
    app = App(url, default_queue=QUEUE)
    app.task(name=NOOP, max_retries=0)(noop)
    return app


app = build(os.environ.get(URL_ENV, "sqlite:///conveyor-bench-http.db?durability=normal"))
