"""What the endpoints share: the App, the settings, and briefly cached broker figures.

Queue statistics cost a scan of the queue on the embedded broker (about 110 ms at a
million messages), and job figures a scan of the kept job records (under a second at a
million), so the list, metrics and health endpoints reuse them for ``cache_seconds``. A
mutating API call clears the cache, so its effect shows at once in the next read. Job
figures are read on the App's background connection (``App.call_states``), so that the
server's event loop keeps answering while SQLite scans.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request

from conveyor.app import App
from conveyor.brokers.base import Broker
from conveyor.brokers.capabilities import Capability
from conveyor.brokers.stream_types import GroupInfo
from conveyor.brokers.types import QueueSpec, QueueStats, TaskStats, WorkerInfo
from conveyor.errors import ConfigError, QueueNotFound
from conveyor.names import DEAD_LETTER_SUFFIX
from conveyor.server.settings import ServerSettings
from conveyor.tasks.states import JobStates

T = TypeVar("T")


class TtlCache:
    """Values kept ``ttl`` seconds; one load at a time per key, others wait for it."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._values: dict[Hashable, tuple[float, Any]] = {}
        self._locks: dict[Hashable, asyncio.Lock] = {}

    async def get(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        value: T
        if (hit := self._fresh(key)) is not None:
            value = hit[1]
            return value
        async with self._locks.setdefault(key, asyncio.Lock()):
            if (hit := self._fresh(key)) is not None:
                value = hit[1]
                return value
            value = await load()
            self._values[key] = (time.monotonic(), value)
            return value

    def _fresh(self, key: Hashable) -> tuple[float, Any] | None:
        hit = self._values.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit
        return None

    def clear(self) -> None:
        self._values.clear()


@dataclass(frozen=True, slots=True)
class QueueView:
    spec: QueueSpec
    stats: QueueStats
    dead_letter_queue: str | None
    is_dead_letter_queue: bool


class ServerState:
    def __init__(self, app: App, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings
        self.cache = TtlCache(settings.cache_seconds)
        self._background = asyncio.Lock()

    async def broker(self) -> Broker:
        return await self.app.abroker()

    async def queue_specs(self) -> list[QueueSpec]:
        broker = await self.broker()
        return await self.cache.get("queues", broker.list_queues)

    async def queue_spec(self, name: str) -> QueueSpec:
        """The queue's spec; looks past the cache before answering QueueNotFound."""
        for spec in await self.queue_specs():
            if spec.name == name:
                return spec
        for spec in await (await self.broker()).list_queues():
            if spec.name == name:
                self.cache.clear()
                return spec
        raise QueueNotFound(name)

    async def queue_stats(self, name: str) -> QueueStats:
        broker = await self.broker()
        return await self.cache.get(("stats", name), lambda: broker.queue_stats(name))

    async def queue_views(self, specs: list[QueueSpec] | None = None) -> list[QueueView]:
        """Queues with their statistics; queues deleted meanwhile are left out."""
        every = await self.queue_specs()
        names = {spec.name for spec in every}
        targets = dead_letter_targets(every)
        views = []
        for spec in every if specs is None else specs:
            with contextlib.suppress(QueueNotFound):
                stats = await self.queue_stats(spec.name)
                target = dead_letter_queue_of(spec)
                views.append(
                    QueueView(
                        spec,
                        stats,
                        target if target in names else None,
                        spec.name in targets or spec.name.endswith(DEAD_LETTER_SUFFIX),
                    )
                )
        return views

    async def job_stats(self, window: float | None = None) -> list[TaskStats]:
        """Figures of the kept job records, or of those updated within the last ``window``
        seconds ([] for brokers without job records)."""
        broker = await self.broker()
        if not self.app.has_results(broker):
            return []
        buckets = self.settings.duration_buckets

        async def load() -> list[TaskStats]:
            since = None if window is None else time.time() - window
            return await self.off_loop(lambda s: s.results.job_stats(since=since, buckets=buckets))

        return await self.cache.get(("jobs", window), load)

    async def off_loop(self, call: Callable[[JobStates], Awaitable[T]]) -> T:
        """Run a long read on the App's background loop and connection, one at a time.

        A store private to its connection (``memory://``) is read on the server's loop.
        """
        if (await self.broker()).private_store:
            return await call(await self.app.astates())
        async with self._background:
            return await asyncio.to_thread(self.app.call_states, call)

    async def close(self) -> None:
        await self.app.aclose()
        await asyncio.to_thread(self.app.close)

    async def groups(self) -> list[GroupInfo]:
        """Every consumer group with its lag ([] for brokers without groups)."""
        broker = await self.broker()
        if Capability.CONSUMER_GROUPS not in broker.capabilities:
            return []

        async def load() -> list[GroupInfo]:
            infos = []
            for name in await broker.list_groups():
                with contextlib.suppress(ConfigError):  # deleted meanwhile
                    infos.append(await broker.describe_group(name))
            return infos

        return await self.cache.get("groups", load)

    async def workers(self) -> list[WorkerInfo] | None:
        """Every worker's last heartbeat (None where there is no worker registry: an App
        without a result store)."""
        if not self.app.has_results(await self.broker()):
            return None
        return await self.cache.get("workers", self.app.aworkers)

    async def consumers(self) -> dict[str, int] | None:
        """Live workers taking from each queue, as their heartbeats name it (None without
        a registry). Code that consumes with the Broker API directly sends no heartbeat
        and is not counted."""
        workers = await self.workers()
        if workers is None:
            return None
        now, after = time.time(), self.settings.worker_lost_after
        counts: dict[str, int] = {}
        for worker in workers:
            if not worker.lost(now, after=after):
                for queue in set(worker.queues):
                    counts[queue] = counts.get(queue, 0) + 1
        return counts


def dead_letter_queue_of(spec: QueueSpec) -> str | None:
    """The queue a queue dead-letters straight into, through the default exchange."""
    if spec.dead_letter_exchange == "" and spec.dead_letter_routing_key:
        return spec.dead_letter_routing_key
    return None


def dead_letter_targets(specs: list[QueueSpec]) -> set[str]:
    return {target for spec in specs if (target := dead_letter_queue_of(spec)) is not None}


async def get_state(request: Request) -> ServerState:
    """Async, so that FastAPI resolves it on the loop instead of hopping to a thread."""
    state: ServerState = request.app.state.conveyor
    return state
