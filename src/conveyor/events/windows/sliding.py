"""The sliding window: per key, the ``size`` seconds of event time up to each event, reported
on every event."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Hashable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from conveyor.events.windows.checks import check_timestamp, window_size
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
)


class _Series:
    """One key's recent events, sorted by time, and the aggregate of its newest window.

    ``times[head:]`` are kept (older ones are evicted lazily, by moving ``head``);
    ``times[low:]`` are the newest window ``(newest - size, newest]``, whose count and
    total are kept up to date so that in-order events cost O(1) amortized. ``parts`` says
    which partition each event came from, so that a partition's events can leave alone.
    """

    __slots__ = ("count", "head", "low", "parts", "times", "total", "values")

    def __init__(self, timestamp: float, value: float, partition: Hashable) -> None:
        self.times = [timestamp]
        self.values = [value]
        self.parts = [partition]
        self.head = 0
        self.low = 0
        self.count = 1
        self.total = value

    @classmethod
    def of(cls, events: list[tuple[float, float, Hashable]], size: float) -> _Series:
        """A series of ``events`` (time, value, partition), none of them evicted yet."""
        events.sort(key=lambda event: event[0])
        times, values, parts = (list(column) for column in zip(*events, strict=True))
        series = cls(times[0], values[0], parts[0])
        series.times, series.values, series.parts = times, values, parts
        series.low = bisect_right(times, times[-1] - size)
        series.count = len(times) - series.low
        series.total = sum(values[series.low :])
        return series

    def kept(self) -> list[tuple[float, float, Hashable]]:
        head = self.head
        return list(zip(self.times[head:], self.values[head:], self.parts[head:], strict=True))


_MIN_SWEEP = 64
"""Events between two sweeps for idle keys, at least; otherwise as many as keys are held,
so sweeping costs O(1) per event."""


class SlidingWindow:
    """Per key, the count and total of the events in ``(t - size, t]`` at each event ``t``.

    Events may arrive out of order by up to ``size``: one older than the watermark (the
    newest event of the slowest partition, see :class:`Watermarks`) by more than ``size``,
    or than the newest event of its own key, is dropped and counted in :attr:`late`.
    Anything newer is counted, in its own window and in later ones. Each key keeps only
    the events that a window can still need (those within ``2 * size`` of its newest
    event), and a key with nothing within ``3 * size`` of the watermark is forgotten, so
    memory follows the keys that are live rather than every key ever seen.
    """

    __slots__ = ("_progress", "_series", "_since_sweep", "_sweep_every", "size")

    def __init__(self, size: float | timedelta) -> None:
        self.size = window_size(size)
        self._series: dict[str, _Series] = {}
        self._progress = Progress()
        self._since_sweep = 0
        self._sweep_every = _MIN_SWEEP

    @property
    def late(self) -> int:
        """How many events were dropped for being over ``size`` older than the watermark or
        their key's newest."""
        return sum(self._progress.late.values())

    @property
    def skipped(self) -> int:
        """How many events were skipped for being at or below their partition's last
        counted offset (read again after a seek back, a rejoin or a restore)."""
        return self._progress.skipped

    @property
    def watermark(self) -> float:
        """The newest event time every partition that is not idle has reached."""
        return self._progress.watermarks.value

    @property
    def keys(self) -> int:
        """How many keys are held."""
        return len(self._series)

    def assign(self, partitions: Iterable[Hashable]) -> None:
        """Partitions now read: each holds the watermark back until its first event."""
        self._progress.watermarks.assign(partitions)

    def revoke(self, partitions: Iterable[Hashable]) -> None:
        """Partitions no longer read, whose events stay counted here (``release`` instead
        when their state goes with them)."""
        self._progress.watermarks.revoke(partitions)

    def idle(self, partition: Hashable) -> None:
        """``partition`` has nothing more to read for now (until its next event)."""
        self._progress.watermarks.idle(partition)

    def add(
        self,
        key: str,
        timestamp: float,
        value: float = 1.0,
        partition: Hashable = 0,
        offset: int | None = None,
    ) -> WindowResult:
        """Count one event; return its key's window ending at it, ``(timestamp - size, timestamp]``.

        For an event dropped as late, nothing changes and the key's newest window is returned
        as it stands (its ``end`` is then not ``timestamp``), or an empty window ending at the
        watermark for a key with no event near it. An event skipped for its ``offset`` (see
        :attr:`skipped`) gets an empty window ending at it: it was answered the first time,
        and a replay must not raise the same alert again.

        Raises:
            MessageError: ``timestamp`` is not a finite number.
        """
        check_timestamp(timestamp)
        size = self.size
        progress = self._progress
        if progress.counted(partition, offset):
            return WindowResult(key, timestamp - size, timestamp, 0, 0.0)
        marks = progress.watermarks
        watermark = marks.value
        series = self._series.get(key)
        if timestamp < (marks.limit(partition) if marks.floors else watermark) - size:
            progress.drop_late(partition)
            if series is None or series.times[-1] <= watermark - 3 * size:
                return WindowResult(key, watermark - size, watermark, 0, 0.0)
            newest = series.times[-1]
            return WindowResult(key, newest - size, newest, series.count, series.total)
        marks.advance(partition, timestamp)
        self._since_sweep += 1
        if self._since_sweep >= self._sweep_every:
            self._sweep()
        if series is None:
            self._series[key] = _Series(timestamp, value, partition)
            return WindowResult(key, timestamp - size, timestamp, 1, value)
        times = series.times
        newest = times[-1]
        cutoff = newest - size
        if timestamp >= newest:
            return self._add_newest(key, series, timestamp, value, partition)
        if timestamp < cutoff:
            progress.drop_late(partition)
            return WindowResult(key, cutoff, newest, series.count, series.total)
        # out of order, but recent enough: insert it, then sum its own window
        index = bisect_right(times, timestamp, series.head)
        times.insert(index, timestamp)
        series.values.insert(index, value)
        series.parts.insert(index, partition)
        if timestamp > cutoff:  # inside the newest window too
            series.count += 1
            series.total += value
        else:  # exactly at the newest window's open start: just before it
            series.low += 1
        first = bisect_right(times, timestamp - size, series.head)
        total = sum(series.values[first : index + 1])
        return WindowResult(key, timestamp - size, timestamp, index + 1 - first, total)

    def snapshot(self, partitions: Iterable[P]) -> dict[P, Snapshot]:
        """Each partition's events that a window can still need, and how far it was read,
        as JSON-safe data for ``restore`` (here or in another process)."""
        chosen = list(dict.fromkeys(partitions))
        rows: dict[Hashable, list[list[Any]]] = {partition: [] for partition in chosen}
        for key in sorted(self._series):
            for timestamp, value, partition in self._series[key].kept():
                into = rows.get(partition)
                if into is not None:
                    into.append([key, timestamp, value])
        return {
            partition: {
                "version": SNAPSHOT_VERSION,
                "kind": "sliding",
                "size": self.size,
                **self._progress.position(partition),
                "events": rows[partition],
            }
            for partition in chosen
        }

    def restore(self, snapshots: Mapping[P, object]) -> None:
        """Take partitions back from their snapshots; their events join their keys' windows.

        Raises:
            DecodeError: a snapshot is not one that ``snapshot`` made.
            ConfigError: it was made with another size, or the partition has events here
                already (they would count twice).
        """
        what = "SlidingWindow"
        progress = self._progress
        read: list[tuple[Hashable, Position, list[tuple[str, float, float]]]] = []
        for partition, raw in snapshots.items():
            data = progress.check(what, "sliding", {"size": self.size}, raw)
            position = progress.read_position(what, partition, data)
            events = [
                (
                    read_key(what, key),
                    read_time(what, "event time", timestamp),
                    read_number(what, "value", value),
                )
                for key, timestamp, value in read_rows(what, data, "events", 3)
            ]
            read.append((partition, position, events))
        joining: dict[str, list[tuple[float, float, Hashable]]] = {}
        for part, position, events in read:
            progress.take(part, position)
            for key, timestamp, value in events:
                joining.setdefault(key, []).append((timestamp, value, part))
        for key, arriving in joining.items():
            held = self._series.get(key)
            self._series[key] = _Series.of([*(held.kept() if held else []), *arriving], self.size)
        progress.watermarks.recompute()

    def release(self, partitions: Iterable[Hashable]) -> None:
        """Partitions that move elsewhere with their state (``snapshot`` them first): their
        events leave the windows here."""
        chosen = set(partitions)
        for key, series in list(self._series.items()):
            if chosen.isdisjoint(series.parts):
                continue
            staying = [event for event in series.kept() if event[2] not in chosen]
            if staying:
                self._series[key] = _Series.of(staying, self.size)
            else:
                del self._series[key]
        self._progress.release(chosen)

    def _sweep(self) -> None:
        """Forget keys whose newest event is ``3 * size`` behind the watermark: an event
        the watermark still accepts is ``size`` behind it at most, so no window of it can
        reach theirs (with ``size`` to spare for rounding)."""
        watermark = self._progress.watermarks.value
        horizon = watermark - 3 * self.size
        # with a size below the timestamps' resolution nothing is safe to forget
        if horizon < watermark - self.size:
            gone = [key for key, series in self._series.items() if series.times[-1] <= horizon]
            for key in gone:
                del self._series[key]
        self._since_sweep = 0
        self._sweep_every = max(_MIN_SWEEP, len(self._series))

    def _add_newest(
        self, key: str, series: _Series, timestamp: float, value: float, partition: Hashable
    ) -> WindowResult:
        times = series.times
        values = series.values
        cutoff = timestamp - self.size
        low = series.low
        count = series.count
        total = series.total
        while low < len(times) and times[low] <= cutoff:
            total -= values[low]
            count -= 1
            low += 1
        if not count:
            total = 0.0  # start the sum afresh, so rounding from subtractions cannot build up
        times.append(timestamp)
        values.append(value)
        series.parts.append(partition)
        series.low = low
        series.count = count + 1
        series.total = total + value
        self._evict(series, cutoff - self.size)
        return WindowResult(key, cutoff, timestamp, series.count, series.total)

    @staticmethod
    def _evict(series: _Series, horizon: float) -> None:
        """Forget events at or before ``horizon``: no window that can still be asked needs them.

        An accepted event is at least ``newest - size``, so its window starts after
        ``newest - 2 * size``. Forgetting moves ``head``; the lists are cut only when the
        forgotten part is the larger half, which keeps eviction O(1) amortized.
        """
        times = series.times
        head = series.head
        # never past `low`: with a size below the timestamps' float resolution, the newest
        # window's own events could otherwise look old enough to forget
        while head < series.low and times[head] <= horizon:
            head += 1
        if head > len(times) // 2:
            del times[:head]
            del series.values[:head]
            del series.parts[:head]
            series.low -= head
            head = 0
        series.head = head
