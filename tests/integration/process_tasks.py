"""Tasks for the process executor: children import them by module and name."""

from __future__ import annotations

import os
import time

from conveyor.app import App

app = App("memory://")


@app.task(executor="process", max_retries=0)
def pid_of_child(multiplier: int) -> list[int]:
    return [os.getpid(), multiplier * 2]


@app.task(executor="process", timeout=0.5, max_retries=0)
def sleeps_too_long(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"
