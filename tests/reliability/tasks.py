"""The reliability tests' tasks, registered on any App (the workers' and the test's own).

Workers serve ``tests.reliability.app:app``; the test process registers the same tasks on an
App of its own to enqueue them, so it never imports the module that reads the environment.

Every task records each run by appending one line ``JOB_ID PID`` to the file named by
``CONVEYOR_TEST_LOG``, with a single ``os.write`` on a descriptor opened with ``O_APPEND``,
so lines from concurrent threads and processes never interleave and a SIGKILL loses none
that was written.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from conveyor.app import App
from conveyor.tasks.context import job_context
from conveyor.tasks.task import Task

LOG_ENV = "CONVEYOR_TEST_LOG"
URL_ENV = "CONVEYOR_TEST_URL"
LEASE_TIMEOUT = 2.0
"""Short, so that the jobs of a SIGKILLed worker come back within seconds."""
TICK_EVERY = 0.5
TICK_QUEUE = "ticks"

_log_lock = threading.Lock()
_log_fd: int | None = None


def record_run() -> None:
    """Append ``JOB_ID PID`` for the job this task runs as, in one write."""
    global _log_fd
    with _log_lock:
        if _log_fd is None:
            _log_fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        fd = _log_fd
    os.write(fd, f"{job_context().job_id} {os.getpid()}\n".encode())


@dataclass(frozen=True)
class Tasks:
    record: Task[Any, Any]
    """Sleeps ``pause`` seconds, then records its run: the run is done once it is logged."""
    record_once: Task[Any, Any]
    """``record`` with ``max_retries=0``: one attempt allowed."""
    sleeper: Task[Any, Any]
    """A sync task (worker thread) that records its start, then sleeps ``seconds``."""
    async_sleeper: Task[Any, Any]
    """The same on the event loop."""
    tick: Task[Any, Any]
    """Periodic, every TICK_EVERY seconds on TICK_QUEUE; records each tick it runs for."""


def register(app: App) -> Tasks:
    """Register the tasks on ``app`` under fixed names, so any App can enqueue them."""

    @app.task(name="reliability.record")
    def record(pause: float = 0.0) -> None:
        if pause:
            time.sleep(pause)
        record_run()

    @app.task(name="reliability.record_once", max_retries=0)
    def record_once(pause: float = 0.0) -> None:
        record(pause)

    @app.task(name="reliability.sleeper", timeout=600)
    def sleeper(seconds: float) -> None:
        record_run()
        time.sleep(seconds)

    @app.task(name="reliability.async_sleeper", timeout=600)
    async def async_sleeper(seconds: float) -> None:
        record_run()
        await asyncio.sleep(seconds)

    @app.periodic(every=TICK_EVERY, name="reliability.tick", queue=TICK_QUEUE)
    def tick() -> None:
        record_run()

    return Tasks(record, record_once, sleeper, async_sleeper, tick)
