from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.app import App
from tests.backend_urls import BACKENDS


@pytest.fixture
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[App]:
    """An App on a fresh embedded database (parametrized indirectly: on another backend of
    tests/backend_urls.py), closed after the test."""
    instance = App(BACKENDS[getattr(request, "param", "sqlite")](tmp_path), lease_timeout=5.0)
    yield instance
    await instance.aclose()
    instance.close()
