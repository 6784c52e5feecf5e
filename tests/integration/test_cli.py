"""The conveyor command: one clear line and exit code 1 for a ConveyorError; --debug shows more."""

from __future__ import annotations

import subprocess
import sys

import pytest


def conveyor(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["worker", "no_such_module:app"], "cannot import 'no_such_module'"),
        (["worker", "no-colon"], "is not MODULE:ATTRIBUTE"),
        (["worker", "tests.integration.process_tasks:pid_of_child"], "not a conveyor App"),
        (
            ["worker", "tests.integration.process_tasks:app", "--autoscale", "3:1"],
            "minimum",
        ),
        (
            ["worker", "tests.integration.process_tasks:app", "--autoscale", "1:3",
             "--scale-at", "many"],
            "is not LOW:HIGH",
        ),
    ],
)  # fmt: skip
def test_bad_worker_invocations_fail_with_one_clear_line(
    arguments: list[str], message: str
) -> None:
    result = conveyor(*arguments)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("conveyor: error: ")
    assert message in result.stderr


def test_debug_shows_the_traceback() -> None:
    result = conveyor("--debug", "worker", "no_such_module:app")
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_debug_after_the_command_shows_the_traceback_too(tmp_path) -> None:
    result = conveyor("queues", "list", "--broker", f"sqlite:///{tmp_path / 'none.db'}", "--debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "there is no database at" in result.stderr
