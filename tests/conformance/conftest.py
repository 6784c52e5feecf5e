"""The conformance suite: every test runs against every backend in tests/backend_urls.py.

``@pytest.mark.needs(Capability.X, ...)`` runs a test only on backends that declare those
capabilities, so the suite is gated by what a backend says it does, never by its type.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest

from conveyor import Broker, Capability, open_broker
from tests.backend_urls import BACKENDS

_names = itertools.count()


@pytest.fixture(params=sorted(BACKENDS))
async def broker(request, tmp_path) -> AsyncIterator[Broker]:
    instance = open_broker(BACKENDS[request.param](tmp_path))
    marker = request.node.get_closest_marker("needs")
    needed: tuple[Capability, ...] = marker.args if marker else ()
    missing = [c.value for c in needed if c not in instance.capabilities]
    if missing:
        pytest.skip(f"{request.param} does not declare {', '.join(missing)}")
    await instance.connect()
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
def name(request) -> str:
    """A queue/exchange name unique to this test, so shared servers need no flushing."""
    raw = f"t{next(_names)}-{request.node.originalname[:40]}"
    return raw.replace("_", "-")
