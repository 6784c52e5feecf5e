from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile("default")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A broker URL on a fresh database file in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'conveyor.db'}"
