"""The conformance suite: every test runs against every backend in tests/backend_urls.py.

``@pytest.mark.needs(Capability.X, ...)`` runs a test only on backends that declare those
capabilities, so the suite is gated by what a backend says it does, never by its type.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from conveyor import Broker, Capability, open_broker
from conveyor.brokers import open_results
from conveyor.errors import BrokerUnavailable
from conveyor.tasks.states import JobStates
from tests.backend_urls import BACKENDS, unavailable

_names = itertools.count()
_RUN = secrets.token_hex(3)  # names differ between runs on servers that keep queues
REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``broker_fault(backend, reason)`` expects the test to fail on that backend only:
    the local server there has a known bug, and the test is kept as it is rather than
    weakened. Strict, so a fixed server turns the mark into a failure to remove it."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("broker") if callspec is not None else None
        for marker in item.iter_markers("broker_fault"):
            if marker.args[0] == backend:
                item.add_marker(pytest.mark.xfail(reason=marker.args[1], strict=True))


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
    raw = f"t{_RUN}-{next(_names)}-{request.node.originalname[:40]}"
    return raw.replace("_", "-")


@pytest.fixture(params=["own-results", "redis-results"])
async def states(request: pytest.FixtureRequest, broker: Broker) -> AsyncIterator[JobStates]:
    """The job state machine on the broker, with its own result store where it keeps one
    (the one-transaction path), and with a Redis one under a key prefix of this test's own
    (the path every other broker takes)."""
    if request.param == "own-results":
        if Capability.RESULTS not in broker.capabilities:
            pytest.skip(f"{broker.scheme} keeps no results of its own")
        yield JobStates(broker, broker.results())
        return
    prefix = f"conveyor-test-{secrets.token_hex(4)}:"
    results = open_results(f"{REDIS_URL}?prefix={prefix}")
    try:
        await results.connect()
    except BrokerUnavailable as error:
        unavailable(f"the Redis result store is unreachable: {error}")
    try:
        yield JobStates(broker, results)
    finally:
        await results.close()
        await _delete_keys(prefix)


async def _delete_keys(prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
