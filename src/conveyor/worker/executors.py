"""How a task's function runs: on the loop, in the thread pool, or in a killable child process.

What runs is the worker's business (consume.py); how it runs is this module's.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from conveyor.errors import TaskTimeout


def describe(error: BaseException) -> dict[str, Any]:
    """An error as JSON: its type, message and traceback."""
    kind = type(error)
    return {
        "type": f"{kind.__module__}.{kind.__qualname__}".removeprefix("builtins."),
        "message": str(error),
        "traceback": "".join(traceback.format_exception(error)),
    }


class ThreadRunner:
    """Runs sync task functions in a pool of threads, several per hop when work piles up.

    A hop between the loop and a thread costs tens of microseconds; handing a thread a
    chunk of calls at once keeps that cost from dominating short tasks.
    """

    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="conveyor-task")

    async def run_chunk(
        self, calls: list[Callable[[], Any]], stop: threading.Event
    ) -> list[tuple[bool, Any]]:
        """Run calls in order in one thread, until ``stop`` is set.

        Returns (succeeded, result or exception) for each call made: the calls after a stop
        are not made, and the list is that much shorter.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _run_all, calls, stop)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _run_all(calls: list[Callable[[], Any]], stop: threading.Event) -> list[tuple[bool, Any]]:
    outcomes: list[tuple[bool, Any]] = []
    for call in calls:
        if stop.is_set():
            break
        try:
            outcomes.append((True, call()))
        except Exception as error:
            outcomes.append((False, error))
    return outcomes


class ProcessRunner:
    """Child processes for tasks declared with ``executor="process"``.

    Each call goes to an idle child; a call past its timeout gets its child SIGKILLed and
    replaced, which a thread cannot offer. Children import the task by module and name,
    so process tasks must be defined at module level.
    """

    def __init__(self, size: int) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._idle: asyncio.Queue[_Child] = asyncio.Queue()
        self._size = size
        self._started = 0

    async def run(
        self, module: str, qualname: str, payload: Any, timeout: float | None, task: str
    ) -> Any:
        child = await self._checkout()
        try:
            child.connection.send((module, qualname, payload))
            ready = asyncio.Event()
            loop = asyncio.get_running_loop()
            descriptor = child.connection.fileno()
            loop.add_reader(descriptor, ready.set)
            try:
                async with asyncio.timeout(timeout):
                    await ready.wait()
            except TimeoutError:
                raise TaskTimeout(task, timeout or 0.0) from None
            finally:
                loop.remove_reader(descriptor)
            succeeded, value = child.connection.recv()
        except BaseException:
            if child.alive:
                child.kill()
            self._started -= 1
            raise
        self._idle.put_nowait(child)
        if not succeeded:
            raise value
        return value

    async def _checkout(self) -> _Child:
        if self._idle.empty() and self._started < self._size:
            self._started += 1
            return _Child(self._context)
        return await self._idle.get()

    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait().kill()


class _Child:
    def __init__(self, context: Any) -> None:
        parent, child = context.Pipe()
        self.connection: Connection = parent
        self.process = context.Process(target=_child_main, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.alive = True

    def kill(self) -> None:
        self.alive = False
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.join(timeout=5)
        self.connection.close()


PARENT_CHECK_INTERVAL = 0.5


def _exit_with_parent(parent: int) -> None:
    """Leave the process at once when ``parent`` is no longer its parent (it died: a SIGKILL
    gives it no chance to stop its children), even in the middle of a task."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_INTERVAL)
    os._exit(1)


def _child_main(connection: Connection) -> None:
    """A child's loop: import the task, decode its arguments, run it, send back the outcome."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    while True:
        try:
            module, qualname, payload = connection.recv()
        except EOFError:
            return
        try:
            target: Any = importlib.import_module(module)
            for part in qualname.split("."):
                target = getattr(target, part)
            args, kwargs = target.codec.decode(payload)
            outcome: tuple[bool, Any] = (True, target.function(*args, **kwargs))
        except Exception as error:
            outcome = (False, error)
        try:
            connection.send(outcome)
        except Exception as error:  # the result or error would not pickle
            connection.send((False, RuntimeError(f"{describe(error)['message']}")))
