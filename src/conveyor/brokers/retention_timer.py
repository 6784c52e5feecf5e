"""Background retention passes for engines that enforce retention themselves.

Whichever process appends starts a pass, at most every ``interval`` seconds and never two
at once; a pass that fails is tried again on a later append (the error is not the
producer's).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from conveyor.errors import ConveyorError


class RetentionTimer:
    def __init__(self, interval: float, run: Callable[[], Awaitable[object]]) -> None:
        self.interval = interval
        self._run = run
        self._due = time.monotonic() + interval
        self._task: asyncio.Task[None] | None = None

    def appended(self) -> None:
        """Start a pass if one is due and none is running."""
        now = time.monotonic()
        if now < self._due or (self._task is not None and not self._task.done()):
            return
        self._due = now + self.interval
        self._task = asyncio.get_running_loop().create_task(self._pass())

    async def _pass(self) -> None:
        with contextlib.suppress(ConveyorError):
            await self._run()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConveyorError):
                await task
