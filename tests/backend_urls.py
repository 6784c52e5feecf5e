"""The backends the shared suites run against: name -> URL factory.

Embedded backends need nothing running. Network backends (added with their adapters)
probe their server first: unreachable means a one-line skip locally and a failure on CI.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

BACKENDS: dict[str, Callable[[Path], str]] = {
    "sqlite": lambda tmp: f"sqlite:///{tmp / 'conveyor.db'}",
    "memory": lambda tmp: "memory://",
}


def unavailable(reason: str) -> None:
    """Skip locally with a one-line reason; fail on CI, where every server must run."""
    if ON_CI:
        pytest.fail(reason)
    pytest.skip(reason)
