"""Worker processes: run one in this process, or supervise several and scale them by depth.

Signals: the first SIGTERM or SIGINT stops taking work and lets running jobs finish within
the grace period (releasing the rest to the queue); a second one releases every lease at
once and exits. A supervisor forwards each signal to its children.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from conveyor.app import App
from conveyor.worker.autoscale import AutoscaleRules, decide
from conveyor.worker.consume import Worker, WorkerCounts
from conveyor.worker.executors import PARENT_CHECK_INTERVAL

log = logging.getLogger("conveyor.worker")


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    app_spec: str
    queues: tuple[str, ...]
    concurrency: int
    prefetch: int | None
    grace: float

    def child_arguments(self) -> list[str]:
        arguments = [
            sys.executable, "-m", "conveyor", "worker", self.app_spec,
            "--processes", "1", "--concurrency", str(self.concurrency),
            "--grace", str(self.grace),
        ]  # fmt: skip
        if self.queues:
            arguments += ["--queues", ",".join(self.queues)]
        if self.prefetch:
            arguments += ["--prefetch", str(self.prefetch)]
        return arguments


async def run_worker(app: App, options: WorkerOptions) -> WorkerCounts:
    """One worker in this process, stopped by SIGTERM/SIGINT (twice: at once)."""
    tune_garbage_collector()
    worker = Worker(
        app,
        queues=options.queues,
        concurrency=options.concurrency,
        prefetch=options.prefetch,
        grace=options.grace,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    supervisor = os.environ.get(SUPERVISOR_ENV)
    watch = None
    if supervisor is not None and supervisor.isdigit():
        watch = loop.create_task(_stop_without(int(supervisor), worker))
    try:
        return await worker.run()
    finally:
        if watch is not None:
            watch.cancel()
        await app.aclose()


SUPERVISOR_ENV = "CONVEYOR_SUPERVISOR_PID"
"""Set for a supervisor's workers: the supervisor's pid, which they stop without."""


async def _stop_without(supervisor: int, worker: Worker) -> None:
    """Stop the worker, as SIGTERM would, once its supervisor is gone (a SIGKILLed
    supervisor cannot forward signals), so that no worker runs on orphaned."""
    while os.getppid() == supervisor:
        await asyncio.sleep(PARENT_CHECK_INTERVAL)
    log.warning("the supervisor (pid %d) is gone; stopping", supervisor)
    worker.stop()


YOUNG_GENERATION_THRESHOLD = 10_000


def tune_garbage_collector() -> None:
    """Collect a worker process's young objects less often, and never the app's own.

    A worker allocates a dozen objects per job; with CPython's default threshold of 700 a
    collection runs every few dozen jobs and costs about a tenth of a short job's time.
    Objects freed by reference counting are unaffected; only cyclic garbage waits longer.
    """
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, oldest)


class Supervisor:
    """Keeps ``count`` worker processes running, or between MIN and MAX with autoscaling."""

    def __init__(
        self,
        app: App,
        options: WorkerOptions,
        *,
        processes: int,
        autoscale: AutoscaleRules | None = None,
        check_interval: float = 2.0,
    ) -> None:
        self.app = app
        self.options = options
        self.autoscale = autoscale
        self.target = autoscale.minimum if autoscale else processes
        self.check_interval = check_interval
        self.children: list[asyncio.subprocess.Process] = []
        self.retiring: list[asyncio.subprocess.Process] = []
        self._stopping = asyncio.Event()
        self._signals = 0
        self._last_change: float | None = None

    def _on_signal(self) -> None:
        self._signals += 1
        for child in self.children + self.retiring:
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
        self._stopping.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal)
        try:
            while not self._stopping.is_set():
                self.children = [child for child in self.children if child.returncode is None]
                self.retiring = [child for child in self.retiring if child.returncode is None]
                await self._rescale()
                await asyncio.wait(
                    [asyncio.ensure_future(self._stopping.wait())], timeout=self.check_interval
                )
            return await self._wait_children()
        finally:
            await self.app.aclose()

    async def _rescale(self) -> None:
        if self.autoscale is not None:
            depth = await self._depth()
            target = decide(
                self.autoscale, depth, len(self.children), time.monotonic(), self._last_change
            )
            if target != self.target:
                self.target = target
                self._last_change = time.monotonic()
        while len(self.children) < self.target:
            arguments = self.options.child_arguments()
            # A session of its own: a terminal's Ctrl-C reaches the supervisor only, which
            # forwards it once, so a first Ctrl-C drains instead of aborting.
            child = await asyncio.create_subprocess_exec(
                *arguments,
                start_new_session=True,
                env={**os.environ, SUPERVISOR_ENV: str(os.getpid())},
            )
            self.children.append(child)
        for child in self.children[self.target :]:
            child.send_signal(signal.SIGTERM)  # graceful: it finishes what it runs
            self.children.remove(child)
            self.retiring.append(child)

    async def _depth(self) -> int:
        broker = await self.app.abroker()
        queues: Sequence[str] = self.options.queues or self.app.task_queues()
        total = 0
        for queue in queues:
            await self.app.ensure_queue(broker, queue)
            total += (await broker.queue_stats(queue)).ready
        return total

    async def _wait_children(self) -> int:
        codes = await asyncio.gather(*(child.wait() for child in self.children + self.retiring))
        return max(codes, default=0)
