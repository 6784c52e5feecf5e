"""The last hour of every queue, sampled in memory for the console's charts.

Every ``interval`` seconds the server reads each queue's statistics (through the server's
short cache) and keeps depth and the lifetime counters. Rates are the counters' differences
between samples: published and acknowledged per second, and dead-lettered per second as the
error rate. A counter that goes down (another process's counts not stored yet, a queue
deleted and declared again) counts as no change. The history starts empty when the server
starts and is not shared between server processes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass

from conveyor.errors import ConveyorError
from conveyor.server.state import ServerState

logger = logging.getLogger("conveyor.server.console")

SAMPLE_INTERVAL = 5.0
WINDOW = 3600.0
MAX_QUEUES = 200
"""Queues followed at most (in name order); the others show figures but no charts."""

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading; None for what the backend cannot know, which draws no point."""

    at: float
    depth: int | None
    published: int | None
    acked: int | None
    dead_lettered: int | None


@dataclass(frozen=True, slots=True)
class QueueSeries:
    """A queue's history as chart points (epoch seconds, value)."""

    depth: list[Point]
    published: list[Point]
    acked: list[Point]
    dead_lettered: list[Point]

    def latest(self, points: list[Point]) -> float | None:
        return points[-1][1] if points else None


class History:
    def __init__(
        self,
        state: ServerState,
        *,
        interval: float = SAMPLE_INTERVAL,
        window: float = WINDOW,
        max_queues: int = MAX_QUEUES,
    ) -> None:
        self.state = state
        self.interval = interval
        self.window = window
        self.max_queues = max_queues
        self.samples: dict[str, deque[Sample]] = {}
        self.last_at = 0.0
        self._lock = asyncio.Lock()

    async def sample(self) -> None:
        """Read every queue once (a broker error is logged and the round skipped)."""
        async with self._lock:
            now = time.time()
            try:
                views = await self.state.queue_views()
            except ConveyorError as error:
                logger.warning("console: cannot sample queue statistics: %s", error)
                return
            self.last_at = now
            keep = int(self.window / self.interval) + 2
            followed = sorted(views, key=lambda view: view.spec.name)[: self.max_queues]
            names = set()
            for view in followed:
                name, stats = view.spec.name, view.stats
                names.add(name)
                samples = self.samples.setdefault(name, deque(maxlen=keep))
                samples.append(
                    Sample(now, stats.depth, stats.published, stats.acked, stats.dead_lettered)
                )
            for gone in set(self.samples) - names:
                del self.samples[gone]

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

    def series(self, queue: str) -> QueueSeries:
        samples = list(self.samples.get(queue, ()))
        since = time.time() - self.window
        samples = [sample for sample in samples if sample.at >= since]
        return QueueSeries(
            depth=[(s.at, float(s.depth)) for s in samples if s.depth is not None],
            published=_rates(samples, "published"),
            acked=_rates(samples, "acked"),
            dead_lettered=_rates(samples, "dead_lettered"),
        )


def _rates(samples: list[Sample], counter: str) -> list[Point]:
    points = []
    for before, after in itertools.pairwise(samples):
        elapsed = after.at - before.at
        if elapsed <= 0:
            continue
        first, last = getattr(before, counter), getattr(after, counter)
        if first is not None and last is not None:
            points.append((after.at, max(last - first, 0) / elapsed))
    return points
