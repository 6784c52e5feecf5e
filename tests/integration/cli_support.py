"""Running the ``conveyor`` command in tests: in-process (fast) or as a real subprocess."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from conveyor.brokers import Broker, open_broker
from conveyor.cli import main

T = TypeVar("T")
BROKER_LINE = "conveyor: broker "


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines()]

    def table(self) -> list[list[str]]:
        """The rows of a printed table, split on runs of spaces (header first)."""
        return [line.split() for line in self.out.splitlines() if line.strip()]

    @property
    def error(self) -> str:
        """stderr without the line that names the broker (commands print it first)."""
        first, _, rest = self.err.partition("\n")
        return rest if first.startswith(BROKER_LINE) else self.err

    def one_line_error(self, code: int, fragment: str) -> None:
        assert self.code == code, (self.code, self.out, self.err)
        assert self.error.startswith("conveyor: error: "), self.err
        assert self.error.count("\n") == 1, self.err
        assert fragment in self.error, self.err


class Cli:
    """``conveyor ...`` in this process, on the test's database (via $CONVEYOR_BROKER_URL)."""

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str], monkeypatch: Any) -> None:
        self.url = url
        self._capsys = capsys
        self._monkeypatch = monkeypatch
        monkeypatch.setenv("CONVEYOR_BROKER_URL", url)

    def __call__(self, *arguments: str, stdin: str | None = None) -> Result:
        if stdin is not None:
            self._monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        self._capsys.readouterr()
        try:
            code = main(list(arguments))
        except SystemExit as exit:  # argparse's usage errors and --help
            code = int(exit.code or 0)
        captured = self._capsys.readouterr()
        return Result(code, captured.out, captured.err)

    @property
    def location(self) -> str:
        """The broker as the command names it on its first line."""
        return open_broker(self.url).location

    def broker(self, work: Callable[[Broker], Awaitable[T]]) -> T:
        """Run ``work`` on a broker of its own, to set up or check the database."""

        async def run() -> T:
            async with open_broker(self.url) as broker:
                return await work(broker)

        return asyncio.run(run())


def conveyor(*arguments: str, stdin: str = "", url: str | None = None, cwd: Any = None) -> Result:
    """The real command, as a subprocess."""
    env = None if url is None else {**os.environ, "CONVEYOR_BROKER_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=cwd,
    )
    return Result(done.returncode, done.stdout, done.stderr)
