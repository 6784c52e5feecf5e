"""The last hour of every queue for the console's charts, kept in the App's result store.

Every ``sample_interval`` seconds (a ServerSettings field) the server reads each queue's
statistics (through the server's short cache) and records depth and the lifetime counters
with ``ResultStore.record_samples``; pages draw what ``ResultStore.samples`` gives back.
So the charts keep their points when the server restarts, and every server on one store
draws the same series: the store keeps one sample per queue per interval, whichever
server took it first. Rates are the counters' differences between samples: published and
acknowledged per second, and dead-lettered per second as the error rate. A counter that
goes down (another process's counts not stored yet, a queue deleted and declared again)
counts as no change. An App without a result store has no history to draw.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from conveyor.brokers.results import ResultStore
from conveyor.brokers.types import QueueSample
from conveyor.errors import ConveyorError
from conveyor.server.state import ServerState

logger = logging.getLogger("conveyor.server.console")

WINDOW = 3600.0
MAX_QUEUES = 200
"""Queues followed at most (in name order); the others show figures but no charts."""

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class QueueSeries:
    """A queue's history as chart points (epoch seconds, value)."""

    depth: list[Point]
    published: list[Point]
    acked: list[Point]
    dead_lettered: list[Point]

    @classmethod
    def of(cls, samples: Sequence[QueueSample]) -> QueueSeries:
        return cls(
            depth=[(s.at, float(s.depth)) for s in samples if s.depth is not None],
            published=_rates(samples, "published"),
            acked=_rates(samples, "acked"),
            dead_lettered=_rates(samples, "dead_lettered"),
        )

    def latest(self, points: list[Point]) -> float | None:
        return points[-1][1] if points else None


EMPTY = QueueSeries([], [], [], [])


class History:
    def __init__(
        self,
        state: ServerState,
        *,
        window: float = WINDOW,
        max_queues: int = MAX_QUEUES,
    ) -> None:
        self.state = state
        self.interval = state.settings.sample_interval
        self.window = window
        self.max_queues = max_queues
        self.last_at = 0.0
        self._lock = asyncio.Lock()

    async def store(self) -> ResultStore | None:
        """Where the samples live: the App's result store, if it has one."""
        app = self.state.app
        if not app.has_results(await self.state.broker()):
            return None
        return await app.aresults()

    async def sample(self) -> None:
        """Read every queue once and record it (a broker or store error is logged and the
        round skipped)."""
        async with self._lock:
            now = time.time()
            try:
                store = await self.store()
                if store is None:
                    return
                views = await self.state.queue_views()
                followed = sorted(views, key=lambda view: view.spec.name)[: self.max_queues]
                samples = [QueueSample.of(view.stats, now) for view in followed]
                await store.record_samples(samples, interval=self.interval, retention=self.window)
            except ConveyorError as error:
                logger.warning("console: cannot sample queue statistics: %s", error)
                return
            self.last_at = now

    async def sample_if_due(self) -> None:
        if time.time() - self.last_at >= self.interval:
            await self.sample()

    async def run(self) -> None:
        """Sample every ``interval`` seconds until cancelled."""
        while True:
            try:
                await self.sample_if_due()
            except Exception:  # keep sampling; the next round may work
                logger.exception("console: sampling queue statistics failed")
            await asyncio.sleep(self.interval)

    async def series(self, queues: Sequence[str]) -> dict[str, QueueSeries] | None:
        """The window's history of each of ``queues`` (no points for a queue never
        sampled); None without a result store to keep it in."""
        store = await self.store()
        if store is None:
            return None
        kept = await store.samples(since=time.time() - self.window, queues=list(queues))
        return {queue: QueueSeries.of(kept.get(queue, [])) for queue in queues}


def _rates(samples: Sequence[QueueSample], counter: str) -> list[Point]:
    points = []
    for before, after in itertools.pairwise(samples):
        elapsed = after.at - before.at
        if elapsed <= 0:
            continue
        first, last = getattr(before, counter), getattr(after, counter)
        if first is not None and last is not None:
            points.append((after.at, max(last - first, 0) / elapsed))
    return points
