"""Connecting to RabbitMQ: one clear BrokerUnavailable within connect_timeout, no password.

The failures are real: a wrong password and a missing vhost against the running server,
a port nobody listens on, and a server that accepts the connection and never answers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from conveyor import open_broker
from conveyor.brokers.rabbitmq.options import mask, parse
from conveyor.errors import BrokerUnavailable, ConfigError
from tests.backend_urls import RABBITMQ_URL, rabbitmq_reachable, unavailable

SECRET = "s3cret-Pa55word"
SERVER = urlsplit(RABBITMQ_URL)
HOST, PORT = SERVER.hostname or "127.0.0.1", SERVER.port or 5672


@pytest.fixture
def server() -> None:
    reason = rabbitmq_reachable()
    if reason is not None:
        unavailable(reason)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A port that accepts connections and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def refused(url: str) -> tuple[str, float]:
    """Connect to ``url``, which must fail; the error text and how long it took."""
    broker = open_broker(url)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as raised:
        await broker.connect()
    elapsed = time.monotonic() - started
    await broker.close()
    text = str(raised.value)
    assert SECRET not in text
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__
    return text, elapsed


async def test_a_wrong_password_is_refused_by_name_and_never_shown(
    server: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    text, elapsed = await refused(f"amqp://guest:{SECRET}@{HOST}:{PORT}/?connect_timeout=5")

    assert "password" in text
    assert f"amqp://guest:***@{HOST}:{PORT}/" in text
    assert elapsed < 5 + 2
    assert all(SECRET not in record.getMessage() for record in caplog.records)


async def test_a_missing_vhost_is_named(server: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    text, elapsed = await refused(
        f"amqp://guest:guest@{HOST}:{PORT}/no-such-vhost?connect_timeout=5"
    )

    assert "'no-such-vhost'" in text
    assert "virtual host" in text
    assert "amqp://guest:***@" in text
    assert elapsed < 5 + 2


async def test_a_port_nobody_listens_on_is_reported_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    port = closed_port()

    text, elapsed = await refused(f"amqp://guest:{SECRET}@127.0.0.1:{port}/?connect_timeout=5")

    assert f"127.0.0.1:{port}" in text
    assert "nothing accepts connections" in text
    assert elapsed < 5 + 2
    assert all(SECRET not in record.getMessage() for record in caplog.records)


async def test_a_server_that_never_answers_times_out_at_connect_timeout(
    silent_port: int,
) -> None:
    text, elapsed = await refused(
        f"amqp://guest:{SECRET}@127.0.0.1:{silent_port}/?connect_timeout=1"
    )

    assert "connect_timeout=1s" in text
    assert 0.9 <= elapsed < 1 + 2


async def test_operations_before_connect_say_so() -> None:
    broker = open_broker(f"amqp://guest:{SECRET}@127.0.0.1:{closed_port()}/")
    with pytest.raises(BrokerUnavailable, match="connect") as raised:
        await broker.ping()
    assert SECRET not in str(raised.value)


def test_unknown_options_are_refused_with_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as raised:
        parse("amqp://guest:guest@localhost/?conect_timeout=3")
    assert "conect_timeout" in str(raised.value)
    assert "connect_timeout" in str(raised.value)
    assert "queue_type" in str(raised.value)
    with pytest.raises(ConfigError, match="queue_type"):
        parse("amqp://localhost/?queue_type=stream")


def test_urls_parse_into_endpoint_and_options() -> None:
    endpoint, options = parse(
        f"amqps://app:{SECRET}@mq.example:5673/%2Fprod?heartbeat=15&queue_type=quorum"
    )
    assert (endpoint.host, endpoint.port, endpoint.user, endpoint.vhost) == (
        "mq.example",
        5673,
        "app",
        "/prod",
    )
    assert endpoint.tls
    assert (options.heartbeat, options.queue_type.value) == (15, "quorum")
    assert SECRET not in repr(endpoint)
    assert endpoint.masked == "amqps://app:***@mq.example:5673/%2Fprod"
    assert endpoint.management_base(None) == "https://mq.example:15671"
    for url in ("amqp://localhost", "amqp://localhost/", "amqp://localhost/%2F"):
        endpoint, _ = parse(url)
        assert (endpoint.vhost, endpoint.port, endpoint.user) == ("/", 5672, "guest")


def test_mask_hides_passwords_only() -> None:
    assert mask(f"amqp://guest:{SECRET}@h:1/v?x=1") == "amqp://guest:***@h:1/v?x=1"
    assert mask("amqp://h/") == "amqp://h/"
    assert SECRET not in repr(open_broker(f"amqp://guest:{SECRET}@h/"))
