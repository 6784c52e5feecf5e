"""The App the reliability tests' worker processes serve: ``tests.reliability.app:app``.

The broker URL comes from ``CONVEYOR_TEST_URL`` and the run log from ``CONVEYOR_TEST_LOG``
(see tests/reliability/tasks.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from conveyor.app import App
from tests.reliability.tasks import LEASE_TIMEOUT, URL_ENV, register

app = App(os.environ[URL_ENV], lease_timeout=LEASE_TIMEOUT)
tasks = register(app)


@app.task(name="reliability.process_sleeper", executor="process", timeout=600)
def process_sleeper(pid_file: str, seconds: float) -> None:
    """In a child process of the worker: writes that process's pid, then sleeps. Defined
    here, at module level, because a process task's child imports it by name."""
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
