"""Where the store's Redis is and how to talk to it: URL options, a client, plain errors.

``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS, and
``unix://[[user]:password@]/path/to/redis.sock``; options ride in the query string
(``?prefix=myapp:&timeout=5``). The password never appears in what this module shows: a
URL with one is shown as ``redis://:***@host:port/0``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import redis.asyncio
import redis.exceptions

from conveyor.errors import BrokerError, BrokerUnavailable, ConfigError
from conveyor.settings import BrokerURL, options_from_query

T = TypeVar("T")

SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """Query options of a Redis result store URL.

    Args:
        prefix: starts every key, so that several apps (or test runs) share one database.
        connect_timeout: seconds to connect and hear PING answered before giving up.
        timeout: seconds one command may take before the server counts as unreachable.
        db: the database number, for ``unix://`` sockets (``redis://`` has it as its path).
        retention_interval: seconds between the background retention passes of topics.
    """

    prefix: str = "conveyor:"
    connect_timeout: float = 5.0
    timeout: float = 10.0
    db: int | None = None
    retention_interval: float = 10.0

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "timeout", "retention_interval"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"Redis URL option {name} must be > 0 seconds, not {value}")
        if self.db is not None and self.db < 0:
            raise ConfigError(f"Redis URL option db must be >= 0, not {self.db}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed store URL: what to connect to, the options, and how to show it safely."""

    address: str
    shown: str
    password: str | None
    options: RedisOptions

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        if not isinstance(url, str) or "://" not in url:
            raise ConfigError("a Redis URL looks like redis://[:password@]host[:port][/db]")
        parsed = BrokerURL.parse(url)
        if parsed.scheme not in SCHEMES:
            raise ConfigError(
                f"a Redis result store URL starts with {', '.join(s + '://' for s in SCHEMES)}, "
                f"not {parsed.scheme}://"
            )
        options = options_from_query(RedisOptions, parsed.query)
        address = f"{parsed.scheme}://{parsed.netloc}{parsed.path}"
        try:
            parts = urlsplit(address)
            password = parts.password
            parts.port  # noqa: B018 - a port that is not a number raises here, not on connect
        except ValueError as exc:
            raise ConfigError(f"bad Redis URL {_masked(address)}: {exc}") from None
        return cls(address, _masked(address), password or None, options)

    def scrub(self, text: str) -> str:
        """``text`` with the password, should it appear, replaced."""
        return text.replace(self.password, "***") if self.password else text

    def client(self, *, text: bool = True) -> redis.asyncio.Redis:
        """A client that connects on first use; strings in and out, or bytes out where
        ``text`` is false (message bodies are bytes)."""
        extra: dict[str, Any] = {} if self.options.db is None else {"db": self.options.db}
        try:
            pool = redis.asyncio.ConnectionPool.from_url(
                self.address,
                decode_responses=text,
                socket_timeout=self.options.timeout,
                socket_connect_timeout=self.options.connect_timeout,
                **extra,
            )
        except ValueError as exc:
            raise ConfigError(f"bad Redis URL {self.shown}: {self.scrub(str(exc))}") from None
        pool.connection_class = _cancel_safe(pool.connection_class)
        return redis.asyncio.Redis.from_pool(pool)

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn redis-py's errors into Conveyor's, naming the server without its password."""
        try:
            yield
        except redis.exceptions.AuthenticationError as exc:
            raise BrokerUnavailable(
                f"Redis at {self.shown} refused the credentials ({self.scrub(str(exc))}); check "
                "the user and password in the URL"
            ) from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            reason = self.scrub(str(exc)) or f"no answer within {self.options.timeout:g}s"
            raise BrokerUnavailable(
                f"cannot reach Redis at {self.shown}: {reason}; start the server or fix the "
                "URL (connect_timeout and timeout are URL options)"
            ) from None
        except redis.exceptions.RedisError as exc:
            raise BrokerError(f"Redis at {self.shown} refused: {self.scrub(str(exc))}") from None


class _CancelSafe:
    """redis-py's connection, without the two places where it loses a cancel on Python 3.11
    (a consumer stopped by Ctrl-C would then poll on for ever):

    - it sends under ``asyncio.wait_for``, which drops a cancel that arrives as the send
      completes; this sends under ``asyncio.timeout``;
    - checking a connection out of the pool reads under a zero timeout, which turns a
      cancel requested just before into a TimeoutError that redis-py takes for "nothing to
      read"; a cancel already requested is delivered first, here.
    """

    socket_timeout: float | None
    _writer: Any

    async def can_read_destructive(self) -> bool:
        await asyncio.sleep(0)
        return bool(await super().can_read_destructive())  # type: ignore[misc]

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        connection = cast(Any, self)
        if not connection.is_connected:
            await connection.connect()
        elif check_health:
            await connection.check_health()
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        try:
            async with asyncio.timeout(self.socket_timeout or None):
                self._writer.writelines(command)
                await self._writer.drain()
        except TimeoutError:
            await connection.disconnect(nowait=True)
            raise redis.exceptions.TimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await connection.disconnect(nowait=True)
            raise redis.exceptions.ConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:
            await connection.disconnect(nowait=True)  # part of the command may have gone
            raise


_CANCEL_SAFE: dict[type, type] = {}


def _cancel_safe(base: type) -> type:
    """``base`` (redis-py's TCP, TLS or Unix socket connection), made cancel-safe."""
    if base not in _CANCEL_SAFE:
        _CANCEL_SAFE[base] = type(f"CancelSafe{base.__name__}", (_CancelSafe, base), {})
    return _CANCEL_SAFE[base]


def _masked(address: str) -> str:
    parts = urlsplit(address)
    user, at, host = parts.netloc.rpartition("@")
    if not at:
        return address
    name, colon, _ = user.partition(":")
    userinfo = f"{name}:***@" if colon else f"{name}@"
    return f"{parts.scheme}://{userinfo}{host}{parts.path}"


async def answer(pending: Awaitable[T] | T) -> T:
    """Await a command of the async client: redis-py types each command for its sync and
    async clients at once, and on the async one every command is awaitable."""
    return await cast(Awaitable[T], pending)
