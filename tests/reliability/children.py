"""A child process of a reliability test: signalled on purpose, awaited with a bound."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

import pytest


@dataclass
class ChildProcess:
    """One child, and whether the test meant it to exit; ``output`` is for failure reports."""

    name: str
    process: asyncio.subprocess.Process
    stopped: bool = field(default=False, kw_only=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        raise NotImplementedError

    def signal(self, signum: int) -> None:
        self.stopped = True
        os.kill(self.pid, signum)

    async def exit_code(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the exit code (the test fails past it)."""
        try:
            async with asyncio.timeout(timeout):
                return await self.process.wait()
        except TimeoutError:
            pytest.fail(f"{self.name} did not exit within {timeout}s\n{self.output()}")
