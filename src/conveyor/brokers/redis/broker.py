"""The Redis backend: ``redis://``, ``rediss://`` and ``unix://``, through redis.asyncio.

This class adapts the Broker interface onto the modules beside it: ``connection`` (the
URL), ``queues`` (queues on Redis Streams), ``topology`` (queues, exchanges and bindings
as stored), ``entries`` (Message <-> stream entry), ``topics`` and ``groups`` (the streams
model), ``scripts`` (the Lua scripts, run by their hash). Every step that must be atomic
is one script; a script holds the server while it runs, so none of them loops over more
than a batch.

Times that decide anything (lease deadlines, when a delay is due) are the server's clock
(``TIME`` inside the scripts), so workers whose clocks disagree still agree on leases.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio
import redis.exceptions

from conveyor.brokers.base import Broker
from conveyor.brokers.capabilities import DECLARED
from conveyor.brokers.redis import scripts
from conveyor.brokers.redis.connection import Endpoint, answer
from conveyor.brokers.redis.groups import RedisGroups
from conveyor.brokers.redis.queues import RedisQueues
from conveyor.brokers.redis.scripts import Call
from conveyor.brokers.redis.topics import RedisTopics
from conveyor.brokers.redis.watch import Watcher
from conveyor.errors import BrokerUnavailable


class RedisConnection:
    """What the parts of a connected broker share: the clients, the key prefix, errors."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.prefix = endpoint.options.prefix
        self.raw: redis.asyncio.Redis = endpoint.client(text=False)
        """Bytes out: message bodies and stream entries."""
        self.text: redis.asyncio.Redis = endpoint.client()
        """Strings out: names, specs, counters."""
        self.watcher = Watcher(self.text, endpoint.options.timeout)

    async def run(self, call: Call, *, raw: bool = False) -> Any:
        """One script call, with redis-py's errors turned into Conveyor's."""
        with self.endpoint.errors():
            return await scripts.run(self.raw if raw else self.text, call)

    async def close(self) -> None:
        await self.watcher.close()
        await self.raw.aclose()
        await self.text.aclose()


class RedisBroker(RedisQueues, RedisTopics, RedisGroups, Broker):
    """Queues, exchanges, tasks and streams on one Redis server (or a primary).

    Scripts derive keys from what they read, which Redis Cluster refuses: use a single
    server, or a primary with replicas.
    """

    scheme = "redis"
    capabilities = DECLARED["redis"]

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.endpoint = Endpoint.parse(url)
        self._connection: RedisConnection | None = None
        self._connecting = asyncio.Lock()

    def __repr__(self) -> str:
        return f"RedisBroker({self.endpoint.shown!r})"

    @property
    def location(self) -> str:
        return self.endpoint.shown

    # lifecycle

    async def connect(self) -> None:
        async with self._connecting:
            if self._connection is not None:
                return
            connection = RedisConnection(self.endpoint)
            try:
                await self._ping(connection)
            except BaseException:
                await connection.close()
                raise
            self._connection = connection

    async def close(self) -> None:
        await self._stop_retention()
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def ping(self) -> None:
        await self._ping(self._running())

    async def _ping(self, connection: RedisConnection) -> None:
        with self.endpoint.errors():
            async with asyncio.timeout(self.endpoint.options.connect_timeout):
                await answer(connection.text.ping())

    async def persistence(self) -> str:
        """The server's AOF and snapshot settings, and what they mean for a confirmed write."""
        client = self._running().text
        with self.endpoint.errors():
            try:
                config = await answer(client.config_get("appendonly"))
                config.update(await answer(client.config_get("appendfsync")))
                config.update(await answer(client.config_get("save")))
            except redis.exceptions.ResponseError:  # CONFIG renamed or refused
                info = await answer(client.info("persistence"))
                config = {"appendonly": "yes" if info.get("aof_enabled") else "no"}
        return describe_persistence(config)

    def _running(self) -> RedisConnection:
        if self._connection is None:
            raise BrokerUnavailable(
                f"the broker for {self.endpoint.shown} is not connected; call connect()"
            )
        return self._connection


def describe_persistence(config: dict[str, str]) -> str:
    if config.get("appendonly") == "yes":
        fsync = config.get("appendfsync", "")
        promise = {
            "always": "every write is on disk before it is confirmed",
            "everysec": "a crash of the server loses at most the last second of confirmed writes",
            "no": "the OS writes when it likes: a crash loses what it had not written",
        }.get(fsync, "see the server's appendfsync setting")
        return f"appendonly yes, appendfsync {fsync or 'unknown'}: {promise}"
    save = config.get("save", "")
    if save:
        return f"no AOF, RDB snapshots (save {save}): writes since the last snapshot can be lost"
    return "nothing on disk (no AOF, no snapshots): a restart of the server loses everything"


__all__ = ["RedisBroker", "RedisConnection"]
