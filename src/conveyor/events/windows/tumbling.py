"""Tumbling windows: per key, back-to-back buckets of event time, each reported once when the
watermark passes its end."""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from conveyor.errors import ConfigError
from conveyor.events.windows.checks import check_timestamp, seconds, window_size
from conveyor.events.windows.progress import Position, Progress
from conveyor.events.windows.result import WindowResult
from conveyor.events.windows.snapshot import (
    SNAPSHOT_VERSION,
    P,
    Snapshot,
    read_key,
    read_number,
    read_rows,
    read_time,
    read_whole,
)


class _Bucket:
    __slots__ = ("count", "total")

    def __init__(self, value: float, count: int = 1) -> None:
        self.count = count
        self.total = value


class TumblingWindows:
    """Per-key count and total in back-to-back windows ``[k * size, (k + 1) * size)``.

    A window is reported once, when the watermark reaches its end. Each partition's
    watermark is its newest timestamp minus ``grace`` (how long to wait for events that
    arrive out of order); the operator's is the lowest of them (see :class:`Watermarks`).
    An event whose window has already been reported is dropped and counted in
    :attr:`late` rather than reported twice. Only open windows are held in memory.

    Reading several partitions, tell it which are assigned (``assign``, ``revoke``, from
    the consumer's rebalance callbacks) and which have caught up with their log's end
    (``idle``): until then a partition that has not been read holds every window open.
    A window's report adds up what every partition brought to it.
    """

    __slots__ = ("_open", "_progress", "_starts", "grace", "size")

    def __init__(self, size: float | timedelta, grace: float | timedelta = 0.0) -> None:
        self.size = window_size(size)
        self.grace = seconds("grace", grace)
        if self.grace < 0:
            raise ConfigError(f"grace must be 0 seconds or more, not {grace!r}")
        # start -> partition -> key -> aggregate: a partition's share can leave on its own
        self._open: dict[float, dict[Hashable, dict[str, _Bucket]]] = {}
        self._starts: list[float] = []  # heap of the keys of _open
        self._progress = Progress()

    @property
    def late(self) -> int:
        """How many events were dropped because their window had already been reported."""
        return sum(self._progress.late.values())

    @property
    def skipped(self) -> int:
        """How many events were skipped for being at or below their partition's last
        counted offset (read again after a seek back, a rejoin or a restore)."""
        return self._progress.skipped

    @property
    def watermark(self) -> float:
        """Windows ending at or before this time are closed (``-inf`` before any event)."""
        return self._progress.watermarks.value

    def add(
        self,
        key: str,
        timestamp: float,
        value: float = 1.0,
        partition: Hashable = 0,
        offset: int | None = None,
    ) -> list[WindowResult]:
        """Count one event of ``partition``, and return the windows (of any key) that it closed.

        Closed windows come ordered by end, then key; most events close none. With its
        ``offset``, an event at or below the last one counted from ``partition`` is skipped.

        Raises:
            MessageError: ``timestamp`` is not a finite number.
        """
        check_timestamp(timestamp)
        progress = self._progress
        if progress.counted(partition, offset):
            return []
        size = self.size
        start = math.floor(timestamp / size) * size
        marks = progress.watermarks
        if start + size <= (marks.limit(partition) if marks.floors else marks.value):
            progress.drop_late(partition)
            return []
        shares = self._open.get(start)
        if shares is None:
            shares = self._open[start] = {}
            heapq.heappush(self._starts, start)
        buckets = shares.get(partition)
        if buckets is None:
            buckets = shares[partition] = {}
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = _Bucket(value)
        else:
            bucket.count += 1
            bucket.total += value
        if not marks.advance(partition, timestamp - self.grace):
            return []
        return self._close_due()

    def assign(self, partitions: Iterable[Hashable]) -> list[WindowResult]:
        """Partitions now read: each holds the watermark back until its first event."""
        return self._close_due() if self._progress.watermarks.assign(partitions) else []

    def revoke(self, partitions: Iterable[Hashable]) -> list[WindowResult]:
        """Partitions no longer read, whose events stay counted here; the windows their
        going lets close. (``release`` instead when their state goes with them.)"""
        return self._close_due() if self._progress.watermarks.revoke(partitions) else []

    def idle(self, partition: Hashable) -> list[WindowResult]:
        """``partition`` has nothing more to read for now; the windows that lets close.

        It holds the watermark back again from its next event on.
        """
        return self._close_due() if self._progress.watermarks.idle(partition) else []

    def flush(self) -> list[WindowResult]:
        """Close every open window now (at the end of a stream), ordered by end, then key.

        The watermark moves up to the last closed window's end, so later events for the
        windows reported here count as late instead of being reported a second time.
        """
        closed: list[WindowResult] = []
        starts = sorted(self._starts)
        self._starts.clear()
        for start in starts:
            self._report(start, closed)
        if starts:
            marks = self._progress.watermarks
            marks.value = max(marks.value, starts[-1] + self.size)
        return closed

    def snapshot(self, partitions: Iterable[P]) -> dict[P, Snapshot]:
        """Each partition's share of the open windows and how far it was read, as JSON-safe
        data for ``restore`` (here or in another process, after a restart or a rebalance)."""
        chosen = list(dict.fromkeys(partitions))
        rows: dict[Hashable, list[list[Any]]] = {partition: [] for partition in chosen}
        for start in sorted(self._open):
            for partition, buckets in self._open[start].items():
                into = rows.get(partition)
                if into is not None:
                    into.extend([start, k, b.count, b.total] for k, b in sorted(buckets.items()))
        return {
            partition: {
                "version": SNAPSHOT_VERSION,
                "kind": "tumbling",
                "size": self.size,
                "grace": self.grace,
                **self._progress.position(partition),
                "windows": rows[partition],
            }
            for partition in chosen
        }

    def restore(self, snapshots: Mapping[P, object]) -> list[WindowResult]:
        """Take partitions back from their snapshots, all at once so that none closes a
        window before the others are back; returns the windows that are due.

        Raises:
            DecodeError: a snapshot is not one that ``snapshot`` made.
            ConfigError: it was made with another size or grace, or the partition has
                events here already (they would count twice).
        """
        what = "TumblingWindows"
        progress = self._progress
        read: list[tuple[Hashable, Position, list[tuple[float, str, int, float]]]] = []
        for partition, raw in snapshots.items():
            data = progress.check(what, "tumbling", {"size": self.size, "grace": self.grace}, raw)
            position = progress.read_position(what, partition, data)
            windows = [
                (
                    read_time(what, "start", start),
                    read_key(what, key),
                    read_whole(what, "count", count, 1),
                    read_number(what, "total", total),
                )
                for start, key, count, total in read_rows(what, data, "windows", 4)
            ]
            read.append((partition, position, windows))
        for part, position, windows in read:
            progress.take(part, position)
            for start, key, count, total in windows:
                shares = self._open.get(start)
                if shares is None:
                    shares = self._open[start] = {}
                    heapq.heappush(self._starts, start)
                shares.setdefault(part, {})[key] = _Bucket(total, count)
        progress.watermarks.recompute()
        return self._close_due()

    def release(self, partitions: Iterable[Hashable]) -> list[WindowResult]:
        """Partitions that move elsewhere with their state (``snapshot`` them first): their
        events leave the open windows here; returns the windows their going lets close."""
        chosen = set(partitions)
        for start in list(self._open):
            shares = self._open[start]
            for partition in chosen.intersection(shares):
                del shares[partition]
            if not shares:
                del self._open[start]
        self._starts = list(self._open)
        heapq.heapify(self._starts)
        return self._close_due() if self._progress.release(chosen) else []

    def _close_due(self) -> list[WindowResult]:
        closed: list[WindowResult] = []
        starts, size, mark = self._starts, self.size, self._progress.watermarks.value
        while starts and starts[0] + size <= mark:
            self._report(heapq.heappop(starts), closed)
        return closed

    def _report(self, start: float, into: list[WindowResult]) -> None:
        end = start + self.size
        shares = self._open.pop(start)
        if len(shares) == 1:
            (buckets,) = shares.values()
            for key in sorted(buckets):
                bucket = buckets[key]
                into.append(WindowResult(key, start, end, bucket.count, bucket.total))
            return
        merged: dict[str, tuple[list[int], list[float]]] = {}
        for buckets in shares.values():
            for key, bucket in buckets.items():
                counts, totals = merged.setdefault(key, ([], []))
                counts.append(bucket.count)
                totals.append(bucket.total)
        for key in sorted(merged):
            counts, totals = merged[key]
            # fsum: the same total whatever order the partitions came back in
            into.append(WindowResult(key, start, end, sum(counts), math.fsum(totals)))
