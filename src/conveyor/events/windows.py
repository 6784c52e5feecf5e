"""Counting and summing events per key over windows of event time. Pure: no I/O, no clock.

Time is the events' own timestamps (seconds, e.g. from the message), never the wall clock,
so replaying a stream gives the same windows as processing it live, and tests need no
sleeping. Two shapes:

- :class:`TumblingWindows`: fixed, non-overlapping buckets, reported once when they close
  ("clicks per page per 5 minutes").
- :class:`SlidingWindow`: the ``size`` seconds up to each event, reported on every event
  ("more than 100 clicks by one user within 60 s").

Both keep a watermark per partition, as Kafka Streams and Flink do: a consumer that
catches up one partition after another reads partition 0's newest events before
partition 1's oldest, and one watermark over all of them would call partition 1 late.
The operator's watermark is the lowest of its partitions' (see :class:`Watermarks`); a
partition that has caught up (``idle``) stops holding it back until its next event.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from conveyor.errors import ConfigError, MessageError


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One key's aggregate over one window: ``count`` events whose values add up to ``total``.

    Tumbling windows cover ``[start, end)``; a sliding window covers ``(start, end]``.
    """

    key: str
    start: float
    end: float
    count: int
    total: float


def _seconds(what: str, value: float | timedelta) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ConfigError(f"{what} must be seconds or a timedelta, not {value!r}")
    if not math.isfinite(seconds):
        raise ConfigError(f"{what} must be a finite number of seconds, not {value!r}")
    return float(seconds)


def _window_size(value: float | timedelta) -> float:
    size = _seconds("window size", value)
    if size <= 0:
        raise ConfigError(f"window size must be more than 0 seconds, not {value!r}")
    return size


def _check_timestamp(timestamp: float) -> None:
    # NaN would compare false with everything and silently corrupt the windows' order
    if not math.isfinite(timestamp):
        raise MessageError(
            f"event timestamp {timestamp!r} is not a finite number of seconds; "
            "give the event's time, e.g. its Unix timestamp"
        )


class Watermarks:
    """The event time each partition has reached, and the operator's: the lowest among the
    partitions that are not idle (the highest of all when every one is idle). It never
    moves back: a partition that returns from idle behind it has its older events late.

    A partition counts once it has had an event or was ``assign``-ed; an assigned one
    without events holds the watermark at ``-inf`` until it has one or is ``idle``.
    """

    __slots__ = ("_idle", "_marks", "value")

    def __init__(self) -> None:
        self._marks: dict[Hashable, float] = {}
        self._idle: set[Hashable] = set()
        self.value = -math.inf

    def advance(self, partition: Hashable, mark: float) -> bool:
        """Partition ``partition`` has reached ``mark``; whether the watermark moved."""
        marks = self._marks
        if marks.get(partition, -math.inf) < mark:
            marks[partition] = mark
        self._idle.discard(partition)
        return self._recompute()

    def assign(self, partitions: Iterable[Hashable]) -> bool:
        for partition in partitions:
            self._marks.setdefault(partition, -math.inf)
        return self._recompute()

    def revoke(self, partitions: Iterable[Hashable]) -> bool:
        for partition in partitions:
            self._marks.pop(partition, None)
            self._idle.discard(partition)
        return self._recompute()

    def idle(self, partition: Hashable) -> bool:
        if partition in self._marks:
            self._idle.add(partition)
        return self._recompute()

    def _recompute(self) -> bool:
        marks, idle = self._marks, self._idle
        if not marks:
            return False
        if len(marks) == 1:
            lowest = next(iter(marks.values()))
        else:
            active = [mark for partition, mark in marks.items() if partition not in idle]
            lowest = min(active) if active else max(marks.values())
        if lowest <= self.value:
            return False
        self.value = lowest
        return True


class _Bucket:
    __slots__ = ("count", "total")

    def __init__(self, value: float) -> None:
        self.count = 1
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
    """

    __slots__ = ("_late", "_open", "_starts", "_watermarks", "grace", "size")

    def __init__(self, size: float | timedelta, grace: float | timedelta = 0.0) -> None:
        self.size = _window_size(size)
        self.grace = _seconds("grace", grace)
        if self.grace < 0:
            raise ConfigError(f"grace must be 0 seconds or more, not {grace!r}")
        self._open: dict[float, dict[str, _Bucket]] = {}  # start -> key -> aggregate
        self._starts: list[float] = []  # heap of the keys of _open
        self._watermarks = Watermarks()
        self._late = 0

    @property
    def late(self) -> int:
        """How many events were dropped because their window had already been reported."""
        return self._late

    @property
    def watermark(self) -> float:
        """Windows ending at or before this time are closed (``-inf`` before any event)."""
        return self._watermarks.value

    def add(
        self, key: str, timestamp: float, value: float = 1.0, partition: Hashable = 0
    ) -> list[WindowResult]:
        """Count one event of ``partition``, and return the windows (of any key) that it closed.

        Closed windows come ordered by end, then key; most events close none.

        Raises:
            MessageError: ``timestamp`` is not a finite number.
        """
        _check_timestamp(timestamp)
        size = self.size
        start = math.floor(timestamp / size) * size
        if start + size <= self._watermarks.value:
            self._late += 1
            return []
        buckets = self._open.get(start)
        if buckets is None:
            buckets = self._open[start] = {}
            heapq.heappush(self._starts, start)
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = _Bucket(value)
        else:
            bucket.count += 1
            bucket.total += value
        if not self._watermarks.advance(partition, timestamp - self.grace):
            return []
        return self._close_due()

    def assign(self, partitions: Iterable[Hashable]) -> list[WindowResult]:
        """Partitions now read: each holds the watermark back until its first event."""
        return self._close_due() if self._watermarks.assign(partitions) else []

    def revoke(self, partitions: Iterable[Hashable]) -> list[WindowResult]:
        """Partitions no longer read; the windows their going lets close."""
        return self._close_due() if self._watermarks.revoke(partitions) else []

    def idle(self, partition: Hashable) -> list[WindowResult]:
        """``partition`` has nothing more to read for now; the windows that lets close.

        It holds the watermark back again from its next event on.
        """
        return self._close_due() if self._watermarks.idle(partition) else []

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
            marks = self._watermarks
            marks.value = max(marks.value, starts[-1] + self.size)
        return closed

    def _close_due(self) -> list[WindowResult]:
        closed: list[WindowResult] = []
        starts, size, mark = self._starts, self.size, self._watermarks.value
        while starts and starts[0] + size <= mark:
            self._report(heapq.heappop(starts), closed)
        return closed

    def _report(self, start: float, into: list[WindowResult]) -> None:
        end = start + self.size
        buckets = self._open.pop(start)
        for key in sorted(buckets):
            bucket = buckets[key]
            into.append(WindowResult(key, start, end, bucket.count, bucket.total))


class _Series:
    """One key's recent events, sorted by time, and the aggregate of its newest window.

    ``times[head:]`` are kept (older ones are evicted lazily, by moving ``head``);
    ``times[low:]`` are the newest window ``(newest - size, newest]``, whose count and
    total are kept up to date so that in-order events cost O(1) amortized.
    """

    __slots__ = ("count", "head", "low", "times", "total", "values")

    def __init__(self, timestamp: float, value: float) -> None:
        self.times = [timestamp]
        self.values = [value]
        self.head = 0
        self.low = 0
        self.count = 1
        self.total = value


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

    __slots__ = ("_late", "_series", "_since_sweep", "_sweep_every", "_watermarks", "size")

    def __init__(self, size: float | timedelta) -> None:
        self.size = _window_size(size)
        self._series: dict[str, _Series] = {}
        self._watermarks = Watermarks()
        self._since_sweep = 0
        self._sweep_every = _MIN_SWEEP
        self._late = 0

    @property
    def late(self) -> int:
        """How many events were dropped for being over ``size`` older than the watermark or
        their key's newest."""
        return self._late

    @property
    def watermark(self) -> float:
        """The newest event time every partition that is not idle has reached."""
        return self._watermarks.value

    @property
    def keys(self) -> int:
        """How many keys are held."""
        return len(self._series)

    def assign(self, partitions: Iterable[Hashable]) -> None:
        """Partitions now read: each holds the watermark back until its first event."""
        self._watermarks.assign(partitions)

    def revoke(self, partitions: Iterable[Hashable]) -> None:
        self._watermarks.revoke(partitions)

    def idle(self, partition: Hashable) -> None:
        """``partition`` has nothing more to read for now (until its next event)."""
        self._watermarks.idle(partition)

    def add(
        self, key: str, timestamp: float, value: float = 1.0, partition: Hashable = 0
    ) -> WindowResult:
        """Count one event; return its key's window ending at it, ``(timestamp - size, timestamp]``.

        For an event dropped as late, nothing changes and the key's newest window is returned
        as it stands (its ``end`` is then not ``timestamp``), or an empty window ending at the
        watermark for a key with no event near it.

        Raises:
            MessageError: ``timestamp`` is not a finite number.
        """
        _check_timestamp(timestamp)
        size = self.size
        watermark = self._watermarks.value
        series = self._series.get(key)
        if timestamp < watermark - size:
            self._late += 1
            if series is None or series.times[-1] <= watermark - 3 * size:
                return WindowResult(key, watermark - size, watermark, 0, 0.0)
            newest = series.times[-1]
            return WindowResult(key, newest - size, newest, series.count, series.total)
        self._watermarks.advance(partition, timestamp)
        self._since_sweep += 1
        if self._since_sweep >= self._sweep_every:
            self._sweep()
        if series is None:
            self._series[key] = _Series(timestamp, value)
            return WindowResult(key, timestamp - size, timestamp, 1, value)
        times = series.times
        newest = times[-1]
        cutoff = newest - size
        if timestamp >= newest:
            return self._add_newest(key, series, timestamp, value)
        if timestamp < cutoff:
            self._late += 1
            return WindowResult(key, cutoff, newest, series.count, series.total)
        # out of order, but recent enough: insert it, then sum its own window
        index = bisect_right(times, timestamp, series.head)
        times.insert(index, timestamp)
        series.values.insert(index, value)
        if timestamp > cutoff:  # inside the newest window too
            series.count += 1
            series.total += value
        else:  # exactly at the newest window's open start: just before it
            series.low += 1
        first = bisect_right(times, timestamp - size, series.head)
        total = sum(series.values[first : index + 1])
        return WindowResult(key, timestamp - size, timestamp, index + 1 - first, total)

    def _sweep(self) -> None:
        """Forget keys whose newest event is ``3 * size`` behind the watermark: an event
        the watermark still accepts is ``size`` behind it at most, so no window of it can
        reach theirs (with ``size`` to spare for rounding)."""
        watermark = self._watermarks.value
        horizon = watermark - 3 * self.size
        # with a size below the timestamps' resolution nothing is safe to forget
        if horizon < watermark - self.size:
            gone = [key for key, series in self._series.items() if series.times[-1] <= horizon]
            for key in gone:
                del self._series[key]
        self._since_sweep = 0
        self._sweep_every = max(_MIN_SWEEP, len(self._series))

    def _add_newest(
        self, key: str, series: _Series, timestamp: float, value: float
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
            series.low -= head
            head = 0
        series.head = head
