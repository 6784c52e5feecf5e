"""Counting and summing events per key over windows of event time. Pure: no I/O, no clock.

Time is the events' own timestamps (seconds, e.g. from the message), never the wall clock,
so replaying a stream gives the same windows as processing it live, and tests need no
sleeping. Two shapes:

- :class:`TumblingWindows`: fixed, non-overlapping buckets, reported once when they close
  ("clicks per page per 5 minutes").
- :class:`SlidingWindow`: the ``size`` seconds up to each event, reported on every event
  ("more than 100 clicks by one user within 60 s").
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
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


class _Bucket:
    __slots__ = ("count", "total")

    def __init__(self, value: float) -> None:
        self.count = 1
        self.total = value


class TumblingWindows:
    """Per-key count and total in back-to-back windows ``[k * size, (k + 1) * size)``.

    A window is reported once, when the watermark (the newest timestamp seen, minus
    ``grace``) reaches its end: ``grace`` is how long to wait for events that arrive out of
    order. An event whose window has already been reported is dropped and counted in
    :attr:`late` rather than reported twice. Only open windows are held in memory.
    """

    __slots__ = ("_late", "_open", "_starts", "_watermark", "grace", "size")

    def __init__(self, size: float | timedelta, grace: float | timedelta = 0.0) -> None:
        self.size = _window_size(size)
        self.grace = _seconds("grace", grace)
        if self.grace < 0:
            raise ConfigError(f"grace must be 0 seconds or more, not {grace!r}")
        self._open: dict[float, dict[str, _Bucket]] = {}  # start -> key -> aggregate
        self._starts: list[float] = []  # heap of the keys of _open
        self._watermark = -math.inf
        self._late = 0

    @property
    def late(self) -> int:
        """How many events were dropped because their window had already been reported."""
        return self._late

    @property
    def watermark(self) -> float:
        """Windows ending at or before this time are closed (``-inf`` before any event)."""
        return self._watermark

    def add(self, key: str, timestamp: float, value: float = 1.0) -> list[WindowResult]:
        """Count one event, and return the windows (of any key) that it closed.

        Closed windows come ordered by end, then key; most events close none.

        Raises:
            MessageError: ``timestamp`` is not a finite number.
        """
        _check_timestamp(timestamp)
        size = self.size
        start = math.floor(timestamp / size) * size
        if start + size <= self._watermark:
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
        mark = timestamp - self.grace
        if mark <= self._watermark:
            return []
        self._watermark = mark
        closed: list[WindowResult] = []
        starts = self._starts
        while starts and starts[0] + size <= mark:
            self._report(heapq.heappop(starts), closed)
        return closed

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
            self._watermark = max(self._watermark, starts[-1] + self.size)
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


class SlidingWindow:
    """Per key, the count and total of the events in ``(t - size, t]`` at each event ``t``.

    Events may arrive a little out of order: one up to ``size`` older than the newest event
    of its key is still counted, in its own window and in later ones. Anything older is
    dropped and counted in :attr:`late`. Each key keeps only the events that a window can
    still need (those within ``2 * size`` of its newest event).
    """

    __slots__ = ("_late", "_series", "size")

    def __init__(self, size: float | timedelta) -> None:
        self.size = _window_size(size)
        self._series: dict[str, _Series] = {}
        self._late = 0

    @property
    def late(self) -> int:
        """How many events were dropped for being over ``size`` older than their key's newest."""
        return self._late

    def add(self, key: str, timestamp: float, value: float = 1.0) -> WindowResult:
        """Count one event; return its key's window ending at it, ``(timestamp - size, timestamp]``.

        For an event dropped as late, nothing changes and the key's newest window is returned
        as it stands (its ``end`` is then not ``timestamp``).

        Raises:
            MessageError: ``timestamp`` is not a finite number.
        """
        _check_timestamp(timestamp)
        size = self.size
        series = self._series.get(key)
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
