"""Event-time windows: examples, and both shapes against brute-force models."""

from __future__ import annotations

import math
from collections import Counter
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.errors import ConfigError, MessageError
from conveyor.events.windows import SlidingWindow, TumblingWindows, WindowResult

# -- tumbling windows: examples --------------------------------------------------------------


def test_clicks_per_page_per_five_minutes() -> None:
    windows = TumblingWindows(timedelta(minutes=5))
    assert windows.add("/home", 10) == []
    assert windows.add("/cart", 20) == []
    assert windows.add("/home", 299.5) == []
    closed = windows.add("/home", 300)  # reaches the first window's end: it closes
    assert closed == [
        WindowResult("/cart", 0, 300, 1, 1.0),
        WindowResult("/home", 0, 300, 2, 2.0),
    ]
    assert windows.flush() == [WindowResult("/home", 300, 600, 1, 1.0)]
    assert windows.flush() == []


def test_values_are_summed_and_windows_close_in_order_of_end_then_key() -> None:
    windows = TumblingWindows(10, grace=10)
    windows.add("b", 1, 2.5)
    windows.add("a", 12, 1.0)
    windows.add("b", 3, 4.0)  # out of order, within the grace
    windows.add("a", 2, 0.5)
    windows.add("a", 15, 3.0)
    assert windows.add("z", 35) == [
        WindowResult("a", 0, 10, 1, 0.5),
        WindowResult("b", 0, 10, 2, 6.5),
        WindowResult("a", 10, 20, 2, 4.0),
    ]
    assert windows.late == 0


def test_grace_waits_for_late_events_then_drops_them() -> None:
    windows = TumblingWindows(10, grace=timedelta(seconds=5))
    windows.add("k", 8)
    assert windows.add("k", 12) == []  # watermark 7: window [0, 10) still open
    assert windows.add("k", 9) == []  # late, but within the grace: counted
    assert windows.watermark == 7
    assert windows.add("k", 15) == [WindowResult("k", 0, 10, 2, 2.0)]  # watermark 10
    assert windows.add("k", 9.9) == []  # its window was reported: dropped
    assert windows.late == 1
    assert windows.flush() == [WindowResult("k", 10, 20, 2, 2.0)]


def test_an_event_for_a_window_never_opened_but_already_passed_is_late() -> None:
    windows = TumblingWindows(10)
    windows.add("k", 100)
    assert windows.add("other", 50) == []
    assert windows.late == 1


def test_after_a_flush_the_flushed_windows_are_not_reported_twice() -> None:
    windows = TumblingWindows(10, grace=100)
    windows.add("k", 5)
    windows.add("k", 25)
    assert windows.flush() == [WindowResult("k", 0, 10, 1, 1.0), WindowResult("k", 20, 30, 1, 1.0)]
    assert windows.add("k", 7) == []  # window [0, 10) was reported
    assert windows.late == 1
    windows.add("k", 31)  # a new window is fine
    assert windows.flush() == [WindowResult("k", 30, 40, 1, 1.0)]


def test_negative_timestamps_and_windows_at_zero() -> None:
    windows = TumblingWindows(10)
    assert windows.add("k", -0.5) == []
    assert windows.add("k", 0.0) == [WindowResult("k", -10, 0, 1, 1.0)]  # [-10, 0) ends at 0
    assert windows.flush() == [WindowResult("k", 0, 10, 1, 1.0)]


# -- sliding window: examples ----------------------------------------------------------------


def test_more_than_100_clicks_by_one_user_within_60_seconds() -> None:
    window = SlidingWindow(timedelta(seconds=60))
    alerts = []
    for i in range(150):  # one click every 0.5 s from user "u1"
        result = window.add("u1", i * 0.5)
        if result.count > 100:
            alerts.append(result)
    assert alerts
    first = alerts[0]
    assert first.count == 101
    assert (first.start, first.end) == (first.end - 60, 50.0)
    assert window.add("u2", 74.0).count == 1  # other users are counted apart


def test_the_window_is_open_at_its_start_and_closed_at_its_end() -> None:
    window = SlidingWindow(10)
    window.add("k", 0)
    window.add("k", 5)
    assert window.add("k", 10) == WindowResult("k", 0, 10, 2, 2.0)  # 0 is out, 5 and 10 in
    assert window.add("k", 10) == WindowResult("k", 0, 10, 3, 3.0)  # same time: both count
    assert window.add("k", 30) == WindowResult("k", 20, 30, 1, 1.0)  # emptied, then refilled


def test_out_of_order_events_are_counted_where_they_belong() -> None:
    window = SlidingWindow(10)
    window.add("k", 100, 1)
    window.add("k", 104, 2)
    # 96 arrives out of order but within size of the newest (104): its own window is (86, 96]
    assert window.add("k", 96, 4) == WindowResult("k", 86, 96, 1, 4.0)
    # 99 is in (89, 99]: counts 96 too; both are also in the newest window (94, 104]
    assert window.add("k", 99, 8) == WindowResult("k", 89, 99, 2, 12.0)
    assert window.add("k", 104.5, 16) == WindowResult("k", 94.5, 104.5, 5, 31.0)
    assert window.late == 0


def test_an_event_exactly_size_older_than_the_newest_is_kept() -> None:
    window = SlidingWindow(10)
    window.add("k", 5)
    window.add("k", 20)
    assert window.add("k", 10) == WindowResult("k", 0, 10, 2, 2.0)  # 20 - 10: not late
    assert window.late == 0
    assert window.add("k", 20.5) == WindowResult("k", 10.5, 20.5, 2, 2.0)  # 10 is not in


def test_too_old_events_are_dropped_and_the_newest_window_is_returned() -> None:
    window = SlidingWindow(10)
    window.add("k", 100)
    window.add("k", 95)
    assert window.add("k", 89.9) == WindowResult("k", 90, 100, 2, 2.0)
    assert window.late == 1


def test_fractional_values_are_summed() -> None:
    window = SlidingWindow(1)
    totals = [window.add("k", t / 10, 0.1).total for t in range(40)]
    assert totals[-1] == pytest.approx(1.0)
    assert totals[:3] == pytest.approx([0.1, 0.2, 0.3])


def test_memory_per_key_stays_bounded() -> None:
    window = SlidingWindow(10)
    for i in range(10_000):
        assert window.add("k", float(i)).count == min(i + 1, 10)
    kept = window._series["k"].times  # private, read only to check the bound
    assert len(kept) <= 2 * 21


def test_a_size_below_the_timestamps_resolution_still_counts_the_event() -> None:
    # 1e12 - 1e-9 == 1e12 in floats: the window is empty, but nothing must break
    window = SlidingWindow(1e-9)
    for _ in range(5):
        assert window.add("k", 1e12).count >= 1


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, -1, 0.0, timedelta(0), timedelta(seconds=-1), math.inf, math.nan, True, "5"]
)
def test_bad_sizes_are_config_errors(size: object) -> None:
    with pytest.raises(ConfigError, match="window size"):
        TumblingWindows(size)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="window size"):
        SlidingWindow(size)  # type: ignore[arg-type]


@pytest.mark.parametrize("grace", [-0.1, timedelta(seconds=-1), math.nan, None])
def test_bad_grace_is_a_config_error(grace: object) -> None:
    with pytest.raises(ConfigError, match="grace"):
        TumblingWindows(10, grace=grace)  # type: ignore[arg-type]


def test_sizes_and_grace_accept_timedelta_and_ints() -> None:
    windows = TumblingWindows(timedelta(minutes=1), grace=timedelta(milliseconds=1500))
    assert (windows.size, windows.grace) == (60.0, 1.5)
    assert SlidingWindow(5).size == 5.0


@pytest.mark.parametrize("timestamp", [math.nan, math.inf, -math.inf])
def test_timestamps_must_be_finite(timestamp: float) -> None:
    with pytest.raises(MessageError, match="not a finite number"):
        TumblingWindows(10).add("k", timestamp)
    with pytest.raises(MessageError, match="not a finite number"):
        SlidingWindow(10).add("k", timestamp)


# -- against brute-force models --------------------------------------------------------------

Event = tuple[str, float, float]


class TumblingModel:
    """Keeps every accepted event and recomputes each window from all of them."""

    def __init__(self, size: float, grace: float) -> None:
        self.size, self.grace = size, grace
        self.accepted: list[tuple[str, float, float, float]] = []  # key, start, ts, value
        self.reported: set[tuple[float, str]] = set()
        self.watermark = -math.inf
        self.late = 0

    def window(self, start: float, key: str) -> WindowResult:
        values = [v for k, s, _, v in self.accepted if (s, k) == (start, key)]
        return WindowResult(key, start, start + self.size, len(values), sum(values))

    def close(self, everything: bool) -> list[WindowResult]:
        due = sorted(
            {
                (s + self.size, k, s)
                for k, s, _, _ in self.accepted
                if (s, k) not in self.reported and (everything or s + self.size <= self.watermark)
            }
        )
        self.reported.update((s, k) for _, k, s in due)
        return [self.window(s, k) for _, k, s in due]

    def add(self, key: str, ts: float, value: float) -> list[WindowResult]:
        start = math.floor(ts / self.size) * self.size
        if start + self.size <= self.watermark:
            self.late += 1
            return []
        self.accepted.append((key, start, ts, value))
        self.watermark = max(self.watermark, ts - self.grace)
        return self.close(everything=False)

    def flush(self) -> list[WindowResult]:
        closed = self.close(everything=True)
        self.watermark = max([self.watermark] + [r.end for r in closed])
        return closed


def sliding_model(size: float, events: list[Event]) -> tuple[list[WindowResult], int]:
    accepted: list[Event] = []
    results, late = [], 0
    watermark = -math.inf
    for key, ts, value in events:
        mine = [(t, v) for k, t, v in accepted if k == key]
        newest = max((t for t, _ in mine), default=-math.inf)
        if ts < watermark - size:
            late += 1
            if newest <= watermark - 3 * size:
                results.append(WindowResult(key, watermark - size, watermark, 0, 0.0))
                continue
            end = newest
        elif ts < newest - size:
            late += 1
            end = newest
        else:
            accepted.append((key, ts, value))
            mine.append((ts, value))
            watermark = max(watermark, ts)
            end = ts
        inside = [v for t, v in mine if end - size < t <= end]
        results.append(WindowResult(key, end - size, end, len(inside), sum(inside)))
    return results, late


keys = st.sampled_from(["a", "b", "c"])
# Quarter seconds and whole values: exactly representable, so totals compare exactly.
times = st.integers(min_value=-40, max_value=400).map(lambda n: n / 4)
values = st.integers(min_value=-5, max_value=20).map(float)
event_lists = st.lists(st.tuples(keys, times, values), max_size=80)


@st.composite
def streams(draw: st.DrawFn) -> list[Event]:
    """Events in random order, or nearly in time order (the usual case) with a few swaps."""
    events = draw(event_lists)
    if draw(st.booleans()):
        events.sort(key=lambda event: event[1])
        for i in draw(st.lists(st.integers(min_value=0, max_value=max(len(events) - 2, 0)))):
            if i + 1 < len(events):
                events[i], events[i + 1] = events[i + 1], events[i]
    return events


sizes = st.sampled_from([0.25, 1.0, 2.5, 5.0, 10.0, 30.0])
graces = st.sampled_from([0.0, 0.5, 3.0, 20.0])


@given(streams(), sizes, graces, st.booleans())
def test_tumbling_windows_agree_with_the_model(
    events: list[Event], size: float, grace: float, flush_midway: bool
) -> None:
    windows, model = TumblingWindows(size, grace), TumblingModel(size, grace)
    for i, (key, ts, value) in enumerate(events):
        if flush_midway and i == len(events) // 2:
            assert windows.flush() == model.flush()
        assert windows.add(key, ts, value) == model.add(key, ts, value)
        assert windows.late == model.late
        assert windows.watermark == model.watermark
    assert windows.flush() == model.flush()


@given(streams(), sizes)
def test_sliding_window_agrees_with_the_model(events: list[Event], size: float) -> None:
    window = SlidingWindow(size)
    expected, late = sliding_model(size, events)
    assert [window.add(*event) for event in events] == expected
    assert window.late == late


@given(
    st.lists(
        st.tuples(keys, st.floats(min_value=-1e6, max_value=1e6), values),
        max_size=60,
    ),
    st.floats(min_value=1e-3, max_value=1e4),
)
def test_sliding_window_agrees_with_the_model_on_arbitrary_float_times(
    events: list[Event], size: float
) -> None:
    window = SlidingWindow(size)
    expected, late = sliding_model(size, events)
    assert [window.add(*event) for event in events] == expected
    assert window.late == late


# -- several partitions ----------------------------------------------------------------------

Partitioned = dict[int, list[tuple[str, float]]]


@st.composite
def partitioned_streams(draw: st.DrawFn) -> tuple[Partitioned, list[int]]:
    """Per partition, events in time order over the same span (each key in one partition,
    as records keyed by it are); and an order of reading them (any merge of the four)."""
    partitions: Partitioned = {}
    for partition in range(4):
        stamps = sorted(draw(st.lists(times, max_size=40)))
        partitions[partition] = [(f"k{partition}-{n % 3}", ts) for n, ts in enumerate(stamps)]
    schedule = draw(st.permutations([p for p, events in partitions.items() for _ in events]))
    return partitions, schedule


def read(partitions: Partitioned, schedule: list[int]) -> list[tuple[int, str, float, bool]]:
    """(partition, key, timestamp, last of its partition) in the order ``schedule`` reads."""
    taken = dict.fromkeys(partitions, 0)
    out = []
    for partition in schedule:
        key, ts = partitions[partition][taken[partition]]
        taken[partition] += 1
        out.append((partition, key, ts, taken[partition] == len(partitions[partition])))
    return out


def tumbling_reference(partitions: Partitioned, size: float) -> Counter[tuple[str, float]]:
    return Counter(
        (key, math.floor(ts / size) * size) for events in partitions.values() for key, ts in events
    )


def feed(
    windows: TumblingWindows, partitions: Partitioned, schedule: list[int]
) -> list[WindowResult]:
    """Every window reported while reading in ``schedule``'s order, each partition marked
    idle at its end, then flushed."""
    closed = windows.assign(partitions)
    for partition, key, ts, last in read(partitions, schedule):
        closed += windows.add(key, ts, partition=partition)
        if last:
            closed += windows.idle(partition)
    return closed + windows.flush()


def test_catching_up_partition_by_partition_counts_every_event() -> None:
    # the replay that counted 69 clicks of 541: partition 0 read to its end before 1 begins
    partitions: Partitioned = {
        p: [(f"/page{n % 5}", 1_000.0 + n * 7 + p) for n in range(150)] for p in range(4)
    }
    schedule = [p for p in range(4) for _ in range(150)]
    windows = TumblingWindows(60)
    counts: Counter[tuple[str, float]] = Counter()
    for result in feed(windows, partitions, schedule):
        counts[(result.key, result.start)] += result.count
    assert windows.late == 0
    assert counts == tumbling_reference(partitions, 60)
    assert sum(counts.values()) == 600


@given(partitioned_streams(), sizes)
def test_tumbling_windows_over_partitions_lose_nothing_read_in_any_order(
    stream: tuple[Partitioned, list[int]], size: float
) -> None:
    partitions, schedule = stream
    windows = TumblingWindows(size)
    closed = feed(windows, partitions, schedule)
    assert windows.late == 0
    counts: Counter[tuple[str, float]] = Counter()
    for result in closed:
        assert (result.key, result.start) not in counts, "a window was reported twice"
        counts[(result.key, result.start)] = result.count
    assert counts == tumbling_reference(partitions, size)


def test_a_window_closes_only_when_every_assigned_partition_passed_it() -> None:
    windows = TumblingWindows(10)
    assert windows.assign([0, 1]) == []
    assert windows.add("a", 1, partition=0) == []
    assert windows.add("a", 25, partition=0) == []  # partition 1 has not been read yet
    assert windows.add("a", 12, partition=1) == [WindowResult("a", 0, 10, 1, 1.0)]
    assert windows.idle(1) == [WindowResult("a", 10, 20, 1, 1.0)]  # 1 caught up: 0 leads
    assert windows.add("b", 21, partition=1) == []  # 1 is back, at 21
    assert windows.revoke([1]) == []  # 0 is at 25 already: nothing more is due
    assert windows.flush() == [WindowResult("a", 20, 30, 1, 1.0), WindowResult("b", 20, 30, 1, 1.0)]


@given(partitioned_streams(), sizes)
def test_sliding_windows_over_partitions_match_a_brute_force_count(
    stream: tuple[Partitioned, list[int]], size: float
) -> None:
    partitions, schedule = stream
    window = SlidingWindow(size)
    window.assign(partitions)
    seen: dict[str, list[float]] = {}
    for partition, key, ts, last in read(partitions, schedule):
        seen.setdefault(key, []).append(ts)
        inside = sum(ts - size < t <= ts for t in seen[key])
        assert window.add(key, ts, partition=partition) == WindowResult(
            key, ts - size, ts, inside, float(inside)
        )
        if last:
            window.idle(partition)
    assert window.late == 0


def test_sliding_windows_forget_keys_that_went_quiet() -> None:
    window = SlidingWindow(60)
    for n in range(100_000):
        window.add(f"user{n}", float(n))  # every user clicks once, a second apart
    assert window.keys < 1_000
    assert window.late == 0


def test_a_key_read_from_two_partitions_is_late_behind_its_own_newest_event() -> None:
    window = SlidingWindow(10)
    window.assign([0, 1])
    assert window.add("a", 100, partition=0).count == 1
    assert window.watermark == -math.inf  # partition 1 has not been read
    assert window.add("a", 0, partition=1) == WindowResult("a", 90, 100, 1, 1.0)
    assert window.late == 1
    window.revoke([1])
    assert window.watermark == 100
    window.idle(7)  # not a partition it reads: nothing changes
    assert window.watermark == 100


def test_revoking_every_partition_leaves_the_watermark_where_it_was() -> None:
    windows = TumblingWindows(10)
    windows.add("a", 15, partition=3)
    assert windows.revoke([3]) == []
    assert windows.idle(3) == []
    assert windows.watermark == 15


def test_a_size_below_the_timestamps_resolution_forgets_no_key() -> None:
    window = SlidingWindow(1e-9)
    for n in range(200):
        window.add(f"k{n}", 1e9)
    assert window.keys == 200
