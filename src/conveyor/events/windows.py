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

Both keep what each partition contributed apart, so that a partition's share of the open
windows can leave as JSON-safe data (``snapshot``, then ``release``) and come back in
another process (``restore``), as a Kafka Streams task's state follows its partition:
window_store.py keeps these snapshots in a changelog topic. Given each event's ``offset``,
an operator skips an event at or below the last one it counted from that partition, so a
replay onto a snapshot, or records delivered again after a rejoin, never count twice.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from conveyor.errors import ConfigError, DecodeError, MessageError

Snapshot = dict[str, Any]
"""One partition's share of an operator's state, as JSON can hold it."""

SNAPSHOT_VERSION = 1

P = TypeVar("P", bound=Hashable)


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

    A restored partition also brings a floor, the watermark of the operator it left: the
    windows up to there were reported over there, so its events for them are late here
    even while this operator's own watermark is lower.
    """

    __slots__ = ("_idle", "_marks", "floors", "value")

    def __init__(self) -> None:
        self._marks: dict[Hashable, float] = {}
        self._idle: set[Hashable] = set()
        self.floors: dict[Hashable, float] = {}
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
            self.floors.pop(partition, None)
        return self._recompute()

    def idle(self, partition: Hashable) -> bool:
        if partition in self._marks:
            self._idle.add(partition)
        return self._recompute()

    def mark(self, partition: Hashable) -> float:
        """How far ``partition`` has got (``-inf`` before its first event)."""
        return self._marks.get(partition, -math.inf)

    def is_idle(self, partition: Hashable) -> bool:
        return partition in self._idle

    def limit(self, partition: Hashable) -> float:
        """Windows ending at or before this are closed for ``partition``'s events."""
        return max(self.value, self.floors.get(partition, -math.inf))

    def restore(self, partition: Hashable, mark: float, idle: bool, floor: float) -> None:
        """Take ``partition`` back as it was left; ``recompute`` once all are back."""
        self._marks[partition] = max(mark, self._marks.get(partition, -math.inf))
        if idle:
            self._idle.add(partition)
        if floor > self.value:
            self.floors[partition] = floor

    def recompute(self) -> bool:
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
        if self.floors:
            self.floors = {p: floor for p, floor in self.floors.items() if floor > lowest}
        return True


# -- snapshots -------------------------------------------------------------------------------


def _bad_snapshot(what: str, problem: str) -> DecodeError:
    return DecodeError(
        f"this is not a {what} snapshot: {problem}; restore only what snapshot() returned, "
        "or start the windows afresh (a store under a new name has an empty changelog)"
    )


def _number(what: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad_snapshot(what, f"{name} is {value!r}, not a number")
    return float(value)


def _time(what: str, name: str, value: object) -> float:
    number = _number(what, name, value)
    if not math.isfinite(number):
        raise _bad_snapshot(what, f"{name} is {value!r}, not a finite time")
    return number


def _time_or_none(what: str, name: str, value: object) -> float:
    """A time that ``None`` stands for ``-inf`` in (JSON has no infinity)."""
    return -math.inf if value is None else _time(what, name, value)


def _whole(what: str, name: str, value: object, lowest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise _bad_snapshot(what, f"{name} is {value!r}, not a whole number >= {lowest}")
    return value


def _rows(what: str, data: Mapping[str, Any], name: str, width: int) -> list[list[Any]]:
    rows = data.get(name)
    if not isinstance(rows, list) or not all(
        isinstance(row, list) and len(row) == width for row in rows
    ):
        raise _bad_snapshot(what, f"{name} must be a list of {width}-item lists")
    return rows


def _key(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise _bad_snapshot(what, f"key {value!r} is not a string")
    return value


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class _Position:
    """Where a snapshot leaves its partition: the part that both window kinds share."""

    offset: int
    mark: float
    idle: bool
    floor: float
    late: int


class _Progress:
    """Per partition: the watermarks, the last offset counted and the events dropped late."""

    __slots__ = ("late", "offsets", "skipped", "watermarks")

    def __init__(self) -> None:
        self.watermarks = Watermarks()
        self.offsets: dict[Hashable, int] = {}
        self.late: dict[Hashable, int] = {}
        self.skipped = 0

    def counted(self, partition: Hashable, offset: int | None) -> bool:
        """Whether the event at ``offset`` of ``partition`` was counted already; if not,
        it is from now on."""
        if offset is None:
            return False
        if offset <= self.offsets.get(partition, -1):
            self.skipped += 1
            return True
        self.offsets[partition] = offset
        return False

    def drop_late(self, partition: Hashable) -> None:
        self.late[partition] = self.late.get(partition, 0) + 1

    def position(self, partition: Hashable) -> Snapshot:
        marks = self.watermarks
        return {
            "offset": self.offsets.get(partition, -1),
            "mark": _finite_or_none(marks.mark(partition)),
            "idle": marks.is_idle(partition),
            "floor": _finite_or_none(marks.limit(partition)),
            "late": self.late.get(partition, 0),
        }

    def check(
        self, what: str, kind: str, settings: Mapping[str, float], data: object
    ) -> Mapping[str, Any]:
        """Refuse data that is not a snapshot of this kind of operator, or of other settings."""
        if not isinstance(data, dict):
            raise _bad_snapshot(what, f"expected a dict, not {type(data).__name__}")
        if data.get("version") != SNAPSHOT_VERSION or data.get("kind") != kind:
            found = f"version {data.get('version')!r} of kind {data.get('kind')!r}"
            raise _bad_snapshot(what, f"{found}, not version {SNAPSHOT_VERSION} of {kind!r}")
        for name, expected in settings.items():
            if data.get(name) != expected:
                raise ConfigError(
                    f"the snapshot was taken by a {what} with {name} {data.get(name)!r}, but "
                    f"this one has {name} {expected!r}; restore it into one with the same "
                    f"{name}, or start the windows afresh under a new store name"
                )
        return data

    def read_position(self, what: str, partition: Hashable, data: Mapping[str, Any]) -> _Position:
        if partition in self.offsets or self.watermarks.mark(partition) > -math.inf:
            raise ConfigError(
                f"partition {partition!r} already has events in this {what}; restore a "
                "partition before reading it, or release it first"
            )
        idle = data.get("idle")
        if not isinstance(idle, bool):
            raise _bad_snapshot(what, f"idle is {idle!r}, not true or false")
        return _Position(
            _whole(what, "offset", data.get("offset"), -1),
            _time_or_none(what, "mark", data.get("mark")),
            idle,
            _time_or_none(what, "floor", data.get("floor")),
            _whole(what, "late", data.get("late"), 0),
        )

    def take(self, partition: Hashable, position: _Position) -> None:
        if position.offset >= 0:
            self.offsets[partition] = position.offset
        if position.late:
            self.late[partition] = position.late
        self.watermarks.restore(partition, position.mark, position.idle, position.floor)

    def release(self, partitions: Iterable[Hashable]) -> bool:
        """Forget ``partitions``; whether the watermark moved."""
        chosen = list(partitions)
        for partition in chosen:
            self.offsets.pop(partition, None)
            self.late.pop(partition, None)
        return self.watermarks.revoke(chosen)


# -- tumbling windows ------------------------------------------------------------------------


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
        self.size = _window_size(size)
        self.grace = _seconds("grace", grace)
        if self.grace < 0:
            raise ConfigError(f"grace must be 0 seconds or more, not {grace!r}")
        # start -> partition -> key -> aggregate: a partition's share can leave on its own
        self._open: dict[float, dict[Hashable, dict[str, _Bucket]]] = {}
        self._starts: list[float] = []  # heap of the keys of _open
        self._progress = _Progress()

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
        _check_timestamp(timestamp)
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
        read: list[tuple[Hashable, _Position, list[tuple[float, str, int, float]]]] = []
        for partition, raw in snapshots.items():
            data = progress.check(what, "tumbling", {"size": self.size, "grace": self.grace}, raw)
            position = progress.read_position(what, partition, data)
            windows = [
                (
                    _time(what, "start", start),
                    _key(what, key),
                    _whole(what, "count", count, 1),
                    _number(what, "total", total),
                )
                for start, key, count, total in _rows(what, data, "windows", 4)
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


# -- sliding window --------------------------------------------------------------------------


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
        self.size = _window_size(size)
        self._series: dict[str, _Series] = {}
        self._progress = _Progress()
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
        _check_timestamp(timestamp)
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
        read: list[tuple[Hashable, _Position, list[tuple[str, float, float]]]] = []
        for partition, raw in snapshots.items():
            data = progress.check(what, "sliding", {"size": self.size}, raw)
            position = progress.read_position(what, partition, data)
            events = [
                (
                    _key(what, key),
                    _time(what, "event time", timestamp),
                    _number(what, "value", value),
                )
                for key, timestamp, value in _rows(what, data, "events", 3)
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
