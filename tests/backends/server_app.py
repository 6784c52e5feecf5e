"""An App on a broker server (RabbitMQ with job records in Redis, or Redis alone), for
``conveyor worker`` and ``serve`` as child processes: ``tests.backends.server_app:app``.

The broker and result store URLs come from the environment (the parent test's vhost or
key prefix; no result store URL: the broker's own), and the tasks write what they saw to
files under ``CONVEYOR_TEST_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

from conveyor.app import App

BROKER_URL_ENV = "CONVEYOR_TEST_BROKER_URL"
RESULTS_URL_ENV = "CONVEYOR_TEST_RESULTS_URL"
DIRECTORY_ENV = "CONVEYOR_TEST_DIR"
QUEUE = "ops"


def build(broker_url: str, results_url: str | None) -> App:
    """The App with its three tasks: the test's own handle on what the worker runs."""
    built = App(broker_url, results_url=results_url, default_queue=QUEUE)
    built.task(name="ops.add", max_retries=0)(add)
    built.task(name="ops.flaky", max_retries=2, backoff=0.2)(flaky)
    built.task(name="ops.poison", max_retries=1, backoff=0.1)(poison)
    return built


def _attempts(name: str) -> int:
    """Count this call in ``name`` under the test's directory; the count so far."""
    path = Path(os.environ[DIRECTORY_ENV]) / name
    with path.open("a") as out:
        out.write("x")
    return len(path.read_text())


def add(a: int, b: int) -> int:
    return a + b


def flaky(name: str) -> int:
    """Fails its first attempt, succeeds on the retry."""
    attempt = _attempts(name)
    if attempt < 2:
        raise RuntimeError(f"attempt {attempt} fails")
    return attempt


def poison(name: str) -> None:
    """Fails every attempt, so it ends as a dead letter."""
    raise ValueError(f"poison attempt {_attempts(name)}")


def __getattr__(name: str) -> App:
    """``app``, built from the environment when a child process first loads it."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return build(os.environ[BROKER_URL_ENV], os.environ.get(RESULTS_URL_ENV) or None)
