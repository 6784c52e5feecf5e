"""Fixtures of the backend tests that drive a real server."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.backend_urls import drop_rabbitmq_names, rabbitmq_reachable, unavailable

REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


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


@pytest.fixture
def redis_results_url() -> Iterator[str]:
    """A Redis result store URL under a key prefix of this test's own, whose keys are
    deleted afterwards (a reachable Redis is required)."""
    prefix = f"conveyor-test-{secrets.token_hex(4)}:"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as error:
        client.close()
        unavailable(f"Redis is not reachable at {REDIS_URL} ({error})")
    try:
        yield f"{REDIS_URL}?prefix={prefix}"
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
