from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conveyor.app import App


@pytest.fixture
async def app(sqlite_url: str) -> AsyncIterator[App]:
    """An App on a fresh embedded database, closed after the test."""
    instance = App(sqlite_url, lease_timeout=5.0)
    yield instance
    await instance.aclose()
    instance.close()
