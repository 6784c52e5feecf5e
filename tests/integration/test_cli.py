"""The conveyor command: one clear line and exit code 1 for a ConveyorError; --debug shows more."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conveyor import __version__
from conveyor.cli import parser


def conveyor(*arguments: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
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


@pytest.mark.parametrize(
    ("flags", "queues"),
    [
        (["--queues", "high", "default", "low"], ["high", "default", "low"]),
        (["-Q", "high,default"], ["high", "default"]),
        (["--queues", "high", "-Q", "default,low", "-Q", "a"], ["high", "default", "low", "a"]),
        ([], []),
    ],
)  # fmt: skip
def test_worker_queues_are_given_as_celery_and_rq_users_give_them(
    flags: list[str], queues: list[str]
) -> None:
    arguments = parser().parse_args(["worker", "tests.app:app", *flags, "-c", "4"])
    assert arguments.queues == queues
    assert arguments.concurrency == 4


def test_version_prints_the_version() -> None:
    result = conveyor("--version")
    assert (result.returncode, result.stdout) == (0, f"conveyor {__version__}\n")


def test_an_import_error_inside_the_app_module_names_that_module_and_line(tmp_path) -> None:
    (tmp_path / "shop_tasks.py").write_text(
        "from conveyor import App\napp = App('memory://')\nimport sendgrid_client_missing\n"
    )
    (tmp_path / "broken_tasks.py").write_text("from conveyor import App\napp = App(\n")
    missing = conveyor("worker", "shop_tasks:app", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1
    assert "importing 'shop_tasks' failed at " in missing.stderr
    assert "shop_tasks.py:3: ModuleNotFoundError: No module named 'sendgrid_client_missing'" in (
        missing.stderr
    )
    assert "PYTHONPATH" not in missing.stderr
    broken = conveyor("worker", "broken_tasks:app", cwd=tmp_path)
    assert "importing 'broken_tasks' failed at " in broken.stderr
    assert "broken_tasks.py:2: SyntaxError" in broken.stderr
    absent = conveyor("worker", "no_such_tasks:app", cwd=tmp_path)
    assert "run from the project directory or fix PYTHONPATH" in absent.stderr
