"""The backends the shared suites run against: name -> URL factory.

Embedded backends need nothing running. Network backends probe their server first:
unreachable means a one-line skip locally and a failure on CI.

RabbitMQ (``CONVEYOR_RABBITMQ_URL``, default amqp://guest:guest@127.0.0.1:5672/) gives
each test a virtual host of its own when the management API answers: the suites do not
delete what they create, and a fresh vhost starts as empty as a fresh embedded database
(``list_exchanges() == []``). A test's vhost is deleted when the next test asks for one,
and the last at exit; vhosts left by a killed run are swept by the next. Without the
management API the tests share the URL's vhost.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

RABBITMQ_URL = os.environ.get("CONVEYOR_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
RABBITMQ_MANAGEMENT = os.environ.get("CONVEYOR_RABBITMQ_MANAGEMENT", "http://127.0.0.1:15672")
VHOST_PREFIX = "conveyor-test-"


def unavailable(reason: str) -> None:
    """Skip locally with a one-line reason; fail on CI, where every server must run."""
    if ON_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def rabbitmq_reachable(url: str = RABBITMQ_URL) -> str | None:
    """None if something accepts connections at the URL's host and port, else why not."""
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or 5672
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return None
    except OSError as exc:
        return f"RabbitMQ is not reachable at {host}:{port} ({exc})"


class _ManagementAPI:
    """The RabbitMQ management HTTP API, with the test URL's credentials."""

    def __init__(self, api: str = RABBITMQ_MANAGEMENT, url: str = RABBITMQ_URL) -> None:
        parts = urlsplit(url)
        self.api = api.rstrip("/")
        self.user = parts.username or "guest"
        token = f"{self.user}:{parts.password or 'guest'}".encode()
        self._auth = "Basic " + base64.b64encode(token).decode()

    def call(self, method: str, path: str, body: object = None) -> object:
        """The JSON answer; OSError (HTTP errors included) when it fails."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.api}/api/{path}", data=data, method=method)
        request.add_header("Authorization", self._auth)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read()
        return json.loads(text) if text else None


class _Vhosts:
    """Throwaway virtual hosts, one at a time."""

    def __init__(self, api: _ManagementAPI) -> None:
        self._api = api
        self._names = itertools.count()
        self._current: str | None = None
        self._swept = False

    def fresh(self) -> str | None:
        """A new empty vhost (the previous one deleted); None without the management API."""
        self.close()
        if not self._swept:
            self._swept = True
            if not self._sweep():
                return None
        name = f"{VHOST_PREFIX}{os.getpid()}-{next(self._names)}"
        where = quote(name, safe="")
        try:
            self._api.call("PUT", f"vhosts/{where}", {})
            self._api.call(
                "PUT",
                f"permissions/{where}/{quote(self._api.user, safe='')}",
                {"configure": ".*", "write": ".*", "read": ".*"},
            )
        except OSError:
            return None
        self._current = name
        return name

    def close(self) -> None:
        if self._current is not None:
            self._delete(self._current)
            self._current = None

    def _sweep(self) -> bool:
        """Delete vhosts of test runs whose process is gone; False if the API is away."""
        try:
            listed = self._api.call("GET", "vhosts?columns=name")
        except OSError:
            return False
        for entry in listed if isinstance(listed, list) else []:
            name = str(entry.get("name", ""))
            pid = name.removeprefix(VHOST_PREFIX).split("-")[0]
            if name.startswith(VHOST_PREFIX) and pid.isdigit() and not _alive(int(pid)):
                self._delete(name)
        return True

    def _delete(self, name: str) -> None:
        with contextlib.suppress(OSError):
            self._api.call("DELETE", f"vhosts/{quote(name, safe='')}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_vhosts = _Vhosts(_ManagementAPI())
atexit.register(_vhosts.close)


def _rabbitmq(tmp: Path) -> str:
    reason = rabbitmq_reachable()
    if reason is not None:
        unavailable(reason)
    vhost = _vhosts.fresh()
    if vhost is None:
        return RABBITMQ_URL
    return urlsplit(RABBITMQ_URL)._replace(path=f"/{quote(vhost, safe='')}").geturl()


REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_PREFIX = "conveyor-test-"


class _RedisPrefixes:
    """Throwaway key prefixes on the shared Redis, one at a time: a test's keys are
    deleted when the next test asks for a prefix, and the last at exit."""

    def __init__(self) -> None:
        self._names = itertools.count()
        self._current: str | None = None

    def fresh(self) -> str:
        self.close()
        self._current = f"{REDIS_PREFIX}{os.getpid()}-{next(self._names)}:"
        return self._current

    def close(self) -> None:
        if self._current is not None:
            delete_redis_keys(self._current)
            self._current = None


def delete_redis_keys(prefix: str, url: str = REDIS_URL) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    except redis.RedisError:
        pass
    finally:
        client.close()


def redis_reachable(url: str = REDIS_URL) -> str | None:
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return None
    except OSError as exc:
        return f"Redis is not reachable at {host}:{port} ({exc})"


_redis_prefixes = _RedisPrefixes()
atexit.register(_redis_prefixes.close)


def _redis(tmp: Path) -> str:
    reason = redis_reachable()
    if reason is not None:
        unavailable(reason)
    return f"{REDIS_URL}?prefix={_redis_prefixes.fresh()}"


def _kafka_url(tmp: Path) -> str:
    from tests.kafka_server import kafka_url

    return kafka_url(tmp)


def _noida_url(tmp: Path) -> str:
    from tests.kafka_server import noida_url

    return noida_url(tmp)


BACKENDS: dict[str, Callable[[Path], str]] = {
    "sqlite": lambda tmp: f"sqlite:///{tmp / 'conveyor.db'}",
    "memory": lambda tmp: "memory://",
    "rabbitmq": _rabbitmq,
    "kafka": _kafka_url,
    "kafka-noida": _noida_url,
    "redis": _redis,
}


# helpers for the tests that drive the RabbitMQ server directly (tests/backends)


def rabbitmqctl(*arguments: str, timeout: float = 60) -> str:
    """Run rabbitmqctl on the local node; its stdout."""
    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmqctl is not on PATH")
    done = subprocess.run(
        ["rabbitmqctl", *arguments], capture_output=True, text=True, timeout=timeout, check=True
    )
    return done.stdout


def close_rabbitmq_connections(connection_name: str) -> int:
    """Close (server side) only the connections that call themselves ``connection_name``,
    as a lost network would; returns how many. Other clients of the server are left alone.
    """
    listed = rabbitmqctl("list_connections", "--silent", "pid", "client_properties")
    marker = f'{{"connection_name","{connection_name}"}}'
    pids = [line.split("\t", 1)[0] for line in listed.splitlines() if marker in line]
    for pid in pids:
        rabbitmqctl("close_connection", pid, "closed by a Conveyor fault test")
    return len(pids)


def drop_rabbitmq_names(token: str, vhost: str = "/") -> None:
    """Delete every queue and exchange of ``vhost`` whose name contains ``token``, and
    the backend's delay exchange once nothing is bound to it any more (through the
    management API; without it, the queues through rabbitmqctl)."""
    api = _ManagementAPI()
    where = quote(vhost, safe="")
    try:
        for kind in ("queues", "exchanges"):
            listed = api.call("GET", f"{kind}/{where}?columns=name")
            for entry in listed if isinstance(listed, list) else []:
                name = str(entry.get("name", ""))
                if token in name:
                    api.call("DELETE", f"{kind}/{where}/{quote(name, safe='')}")
        with contextlib.suppress(OSError):
            if not api.call("GET", f"exchanges/{where}/conveyor.delay/bindings/source"):
                api.call("DELETE", f"exchanges/{where}/conveyor.delay")
        return
    except OSError:
        pass
    for name in rabbitmqctl("list_queues", "-p", vhost, "--silent", "name").split():
        if token in name:
            rabbitmqctl("delete_queue", "-p", vhost, name)
