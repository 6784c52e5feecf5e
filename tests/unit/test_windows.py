"""Event-time windows: examples, and both shapes against brute-force models."""

from __future__ import annotations

import math
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
    for key, ts, value in events:
        mine = [(t, v) for k, t, v in accepted if k == key]
        newest = max((t for t, _ in mine), default=-math.inf)
        if ts < newest - size:
            late += 1
            end = newest
        else:
            accepted.append((key, ts, value))
            mine.append((ts, value))
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
