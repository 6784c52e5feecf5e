"""Fixtures of the backend tests that drive a real server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.backend_urls import drop_rabbitmq_names, rabbitmq_reachable, unavailable


@pytest.fixture
def token() -> Iterator[str]:
    """A name part unique to this test; RabbitMQ queues and exchanges that carry it are
    deleted afterwards (a reachable RabbitMQ is required)."""
    reason = rabbitmq_reachable()
    if reason is not None:
        unavailable(reason)
    value = f"rmqt-{uuid.uuid4().hex[:10]}"
    yield value
    drop_rabbitmq_names(value)
