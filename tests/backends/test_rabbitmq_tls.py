"""``amqps://`` against the real RabbitMQ, through a TLS terminator the test runs.

The local RabbitMQ listens without TLS, so each test puts an asyncio TLS server with a
certificate made for it (openssl, a throwaway CA-less self-signed one for ``localhost``)
in front of port 5672: the client must complete a real TLS handshake before a byte of
AMQP reaches the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from conveyor import Message, QueueSpec, open_broker
from conveyor.errors import BrokerUnavailable, ConfigError
from tests.backend_urls import BACKENDS, unavailable


@dataclass
class Terminator:
    port: int
    certificate: Path
    handshakes: int = 0


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    """A self-signed certificate and key for localhost and 127.0.0.1, in one PEM file."""
    if shutil.which("openssl") is None:
        unavailable("openssl is not on PATH")
    pem = tmp_path / "localhost.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(pem), "-out", str(pem)],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return pem


@pytest.fixture
async def terminator(certificate: Path, tmp_path: Path) -> AsyncIterator[Terminator]:
    """TLS on a free port, relayed in clear to the local RabbitMQ."""
    upstream = urlsplit(BACKENDS["rabbitmq"](tmp_path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate)
    relays: set[asyncio.Task[None]] = set()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.handshakes += 1
        up_reader, up_writer = await asyncio.open_connection(
            upstream.hostname, upstream.port or 5672
        )
        pair = [
            asyncio.create_task(relay(reader, up_writer)),
            asyncio.create_task(relay(up_reader, writer)),
        ]
        relays.update(pair)
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await asyncio.gather(*pair)
        writer.close()
        up_writer.close()

    server = await asyncio.start_server(accepted, "127.0.0.1", 0, ssl=context)
    state = Terminator(server.sockets[0].getsockname()[1], certificate)
    try:
        yield state
    finally:
        server.close()
        for task in relays:
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)


def amqps_url(terminator: Terminator, tmp_path: Path, **options: str) -> str:
    """The test's vhost, reached over TLS through the terminator (no management API)."""
    upstream = urlsplit(BACKENDS["rabbitmq"](tmp_path))
    query = urlencode({"management": "false", "connect_timeout": "5", **options})
    netloc = f"guest:guest@localhost:{terminator.port}"
    return upstream._replace(scheme="amqps", netloc=netloc, query=query).geturl()


async def test_amqps_with_the_servers_ca_publishes_and_consumes_over_tls(
    terminator: Terminator, tmp_path: Path
) -> None:
    url = amqps_url(terminator, tmp_path, cafile=str(terminator.certificate))
    async with open_broker(url) as broker:
        await broker.declare_queue(QueueSpec("secure"))
        await broker.publish(Message(b"over tls", routing_key="secure"))
        (delivery,) = await broker.receive("secure", wait=5)
        assert delivery.message.body == b"over tls"
        await broker.ack(delivery)
    assert terminator.handshakes >= 1


async def test_an_untrusted_server_certificate_is_refused_by_name(
    terminator: Terminator, tmp_path: Path
) -> None:
    url = amqps_url(terminator, tmp_path)
    with pytest.raises(BrokerUnavailable) as raised:
        async with open_broker(url):
            pass
    message = str(raised.value)
    assert "certificate is not trusted" in message, message
    assert "?cafile=PATH" in message
    assert ":guest@" not in message


async def test_verify_false_connects_to_any_certificate(
    terminator: Terminator, tmp_path: Path
) -> None:
    async with open_broker(amqps_url(terminator, tmp_path, verify="false")) as broker:
        await broker.ping()


def test_tls_options_need_amqps_and_real_files(tmp_path: Path) -> None:
    pem = tmp_path / "bad.pem"
    pem.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="use amqps://"):
        open_broker(f"amqp://localhost/?cafile={pem}")
    with pytest.raises(ConfigError, match="is not a file"):
        open_broker(f"amqps://localhost/?cafile={tmp_path / 'missing.pem'}")
    with pytest.raises(ConfigError, match="keyfile needs certfile"):
        open_broker(f"amqps://localhost/?keyfile={pem}")
    broker = open_broker(f"amqps://localhost/?cafile={pem}")
    with pytest.raises(ConfigError, match="cannot use the TLS files"):
        asyncio.run(broker.connect())
