"""What a Redis with an append-only file keeps across a SIGKILL of the server.

Each test starts its own ``redis-server`` (free port, temporary directory, AOF on), has a
producer publish one message at a time while recording each one whose publish returned
(confirmed), kills the server with SIGKILL mid-run, starts it again on the same files and
counts what came back: with ``appendfsync always`` nothing confirmed is lost and nothing
acknowledged returns; with ``everysec`` only what was confirmed in the last second (plus a
margin for a loaded machine) may be missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import open_broker
from conveyor.brokers.base import Broker
from conveyor.brokers.redis.broker import RedisBroker
from conveyor.brokers.types import QueueSpec
from conveyor.errors import ConveyorError
from conveyor.message import Message
from tests.backend_urls import BACKENDS, unavailable

QUEUE = "orders"
CONFIRMED_BEFORE_KILL = 300
ACKED_FIRST = 100
EVERYSEC_MARGIN_S = 2.0
"""everysec promises at most the last second; the margin absorbs a busy machine."""


class RedisServer:
    """A redis-server of this test's own, with an append-only file in ``directory``."""

    def __init__(self, directory: Path, appendfsync: str) -> None:
        self.directory = directory
        self.appendfsync = appendfsync
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0?prefix=durable:&timeout=3&connect_timeout=3"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not on PATH")
            return
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.directory), "--appendonly", "yes", "--appendfsync", self.appendfsync,
             "--save", "", "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 1),
            ):
                return
            if self.process.poll() is not None:
                pytest.fail(f"redis-server exited with {self.process.returncode}")
            time.sleep(0.05)
        pytest.fail(f"redis-server did not listen on {self.port} within 30 s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None


@pytest.fixture(params=["always", "everysec"])
def own_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server with ``--appendonly yes --appendfsync <param>``, killed (with its
    process group) however the test ends."""
    server = RedisServer(tmp_path, request.param)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _drain(broker: Broker) -> set[str]:
    received: set[str] = set()
    while deliveries := await broker.receive(QUEUE, max_messages=500, wait=0.5):
        received.update(d.message.id for d in deliveries)
        await broker.ack_many(deliveries)
    return received


async def test_a_sigkilled_server_keeps_what_it_confirmed_as_its_fsync_setting_says(
    own_redis: RedisServer,
) -> None:
    broker = open_broker(own_redis.url)
    await broker.connect()
    try:
        await broker.declare_queue(QueueSpec(QUEUE))
        await broker.publish_batch(
            [Message(b"early", routing_key=QUEUE, id=f"early-{n}") for n in range(ACKED_FIRST)]
        )
        early = await broker.receive(QUEUE, max_messages=ACKED_FIRST, wait=5)
        await broker.ack_many(early)
        acked = {d.message.id for d in early}
        assert len(acked) == ACKED_FIRST

        confirmed: dict[str, float] = {}

        async def produce() -> None:
            for n in range(1_000_000):
                message = Message(b"order", routing_key=QUEUE, id=f"order-{n}")
                try:
                    await broker.publish(message)
                except ConveyorError:
                    return
                confirmed[message.id] = time.monotonic()

        producer = asyncio.create_task(produce())
        while len(confirmed) < CONFIRMED_BEFORE_KILL and not producer.done():
            await asyncio.sleep(0.01)
        own_redis.kill()
        killed_at = time.monotonic()
        await asyncio.wait_for(producer, 60)
        own_redis.start()

        await broker.publish(Message(b"after", routing_key=QUEUE, id="after-restart"))
        received = await _drain(broker)
    finally:
        await broker.close()

    assert "after-restart" in received, "the broker did not work again after the restart"
    assert not received & acked, "acknowledged messages came back"
    lost = set(confirmed) - received
    if own_redis.appendfsync == "always":
        assert not lost, f"{len(lost)} of {len(confirmed)} confirmed messages were lost"
    else:
        too_old = [m for m in lost if confirmed[m] < killed_at - 1.0 - EVERYSEC_MARGIN_S]
        assert not too_old, f"{len(too_old)} lost messages were confirmed over a second before"
    assert received - acked - {"after-restart"} <= set(confirmed) | {
        f"order-{len(confirmed)}"  # the one in flight at the kill may or may not be there
    }


async def test_persistence_reports_the_servers_append_only_setting(
    own_redis: RedisServer,
) -> None:
    broker = open_broker(own_redis.url)
    await broker.connect()
    try:
        said = await broker.persistence()
    finally:
        await broker.close()
    assert said is not None
    assert said.startswith(f"appendonly yes, appendfsync {own_redis.appendfsync}: ")


async def test_the_shared_server_says_it_keeps_nothing_on_disk(tmp_path: Path) -> None:
    broker = open_broker(BACKENDS["redis"](tmp_path))
    assert isinstance(broker, RedisBroker)
    await broker.connect()
    try:
        said = await broker.persistence()
    finally:
        await broker.close()
    assert said.startswith("nothing on disk"), said
