"""Window state handed over as snapshots: a restart or a rebalance changes no figure.

Each property runs a stream through one operator without a break, and again through an
operator that is snapshotted partway (through JSON, as the changelog stores it),
restored into a new one and fed the rest, or the whole stream again (a replay onto the
snapshot): what both report must be the same.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.errors import ConfigError, DecodeError
from conveyor.events.windows import (
    SNAPSHOT_VERSION,
    SlidingWindow,
    TumblingWindows,
    WindowResult,
)

# (partition, offset, key, timestamp, value), in the order a consumer reads them
Read = tuple[int, int, str, float, float]

times = st.integers(min_value=0, max_value=400).map(lambda n: n / 4)
values = st.integers(min_value=-5, max_value=20).map(float)
sizes = st.sampled_from([0.25, 1.0, 2.5, 10.0, 30.0])
graces = st.sampled_from([0.0, 0.5, 3.0])


@st.composite
def reads(draw: st.DrawFn) -> list[Read]:
    """Three partitions, each in near time order with a few swaps, read in any merge."""
    per_partition: dict[int, list[tuple[str, float, float]]] = {}
    for partition in range(3):
        stamps = sorted(draw(st.lists(times, max_size=30)))
        for i in draw(st.lists(st.integers(min_value=0, max_value=28), max_size=4)):
            if i + 1 < len(stamps):
                stamps[i], stamps[i + 1] = stamps[i + 1], stamps[i]
        keys = st.sampled_from([f"k{partition}", f"k{partition}b", "shared"])
        per_partition[partition] = [(draw(keys), ts, draw(values)) for ts in stamps]
    order = draw(st.permutations([p for p, events in per_partition.items() for _ in events]))
    taken = dict.fromkeys(per_partition, 0)
    out: list[Read] = []
    for partition in order:
        key, ts, value = per_partition[partition][taken[partition]]
        out.append((partition, taken[partition], key, ts, value))
        taken[partition] += 1
    return out


def through_json(snapshots: dict[Any, Any]) -> dict[Any, Any]:
    return {p: json.loads(json.dumps(data, allow_nan=False)) for p, data in snapshots.items()}


def tumble(windows: TumblingWindows, stream: list[Read]) -> list[WindowResult]:
    closed: list[WindowResult] = []
    for partition, offset, key, ts, value in stream:
        closed += windows.add(key, ts, value, partition=partition, offset=offset)
    return closed


# -- tumbling --------------------------------------------------------------------------------


@given(reads(), sizes, graces, st.integers(min_value=0, max_value=90), st.booleans())
def test_tumbling_windows_restored_midway_report_what_an_unbroken_run_reports(
    stream: list[Read], size: float, grace: float, cut: int, replay: bool
) -> None:
    unbroken = TumblingWindows(size, grace)
    unbroken.assign(range(3))
    expected = tumble(unbroken, stream) + unbroken.flush()

    first = TumblingWindows(size, grace)
    first.assign(range(3))
    before = tumble(first, stream[:cut])
    saved = through_json(first.snapshot(range(3)))
    second = TumblingWindows(size, grace)
    assert second.restore(saved) == []  # what was due had been reported before the cut
    after = tumble(second, stream if replay else stream[cut:]) + second.flush()

    assert before + after == expected
    assert second.late == unbroken.late
    assert second.skipped == (min(cut, len(stream)) if replay else 0)


def test_an_event_at_or_below_its_partitions_last_offset_is_skipped() -> None:
    windows = TumblingWindows(10)
    windows.add("a", 1, partition=0, offset=5)
    assert windows.add("a", 2, partition=0, offset=5) == []
    assert windows.add("a", 3, partition=0, offset=4) == []
    windows.add("a", 4, partition=1, offset=0)  # offsets are per partition
    windows.add("a", 5)  # without an offset nothing is skipped
    assert windows.skipped == 2
    assert windows.flush() == [WindowResult("a", 0, 10, 3, 3.0)]


def test_a_snapshot_is_json_data_per_partition() -> None:
    windows = TumblingWindows(10, grace=2)
    windows.assign([0, 1, 2])
    windows.add("a", 3, 2.5, partition=0, offset=7)
    windows.add("b", 14, partition=0, offset=8)
    windows.add("a", 5, partition=1, offset=0)
    windows.idle(2)
    snapshots = windows.snapshot([0, 1, 2, 0])
    assert snapshots[0] == {
        "version": SNAPSHOT_VERSION,
        "kind": "tumbling",
        "size": 10.0,
        "grace": 2.0,
        "offset": 8,
        "mark": 12.0,
        "idle": False,
        "floor": 3.0,
        "late": 0,
        "windows": [[0.0, "a", 1, 2.5], [10.0, "b", 1, 1.0]],
    }
    assert snapshots[1]["windows"] == [[0.0, "a", 1, 1.0]]
    assert snapshots[2] == {**snapshots[2], "offset": -1, "mark": None, "idle": True}
    assert TumblingWindows(10).snapshot([4])[4]["floor"] is None


def test_a_partition_handed_over_is_counted_once_between_the_two_operators() -> None:
    here, there = TumblingWindows(10), TumblingWindows(10)
    here.assign([0, 1])
    there.assign([2])
    here.add("a", 1, partition=0, offset=0)
    here.add("a", 2, partition=1, offset=0)
    here.add("b", 3, partition=1, offset=1)
    there.add("a", 4, partition=2, offset=0)
    moving = here.snapshot([1])
    assert here.release([1]) == []  # partition 0 still holds [0, 10) open here
    assert there.restore(moving) == []
    assert there.add("a", 9, partition=1, offset=1) == []  # offset 1 was counted over here
    reported = here.add("a", 11, partition=0, offset=1) + there.flush() + here.flush()
    counts: Counter[tuple[str, float]] = Counter()
    for result in reported:
        counts[(result.key, result.start)] += result.count
    assert counts == {("a", 0.0): 3, ("b", 0.0): 1, ("a", 10.0): 1}


def test_releasing_the_slowest_partition_closes_what_it_held_open() -> None:
    windows = TumblingWindows(10)
    windows.assign([0, 1])
    windows.add("a", 1, partition=0)
    windows.add("a", 25, partition=0)
    windows.add("b", 2, partition=1)
    assert windows.release([1]) == [WindowResult("a", 0, 10, 1, 1.0)]  # b left with 1
    assert windows.release([5]) == []  # never read here
    assert windows.flush() == [WindowResult("a", 20, 30, 1, 1.0)]


def test_a_window_only_the_released_partition_had_goes_with_it() -> None:
    windows = TumblingWindows(10)
    windows.assign([0, 1])
    windows.add("b", 12, partition=1)
    windows.add("a", 1, partition=0)
    assert windows.add("a", 25, partition=0) == [WindowResult("a", 0, 10, 1, 1.0)]
    assert windows.release([1]) == []  # [10, 20) was partition 1's alone
    assert windows.watermark == 25
    assert windows.flush() == [WindowResult("a", 20, 30, 1, 1.0)]


def test_an_idle_partition_comes_back_idle() -> None:
    windows = TumblingWindows(10)
    windows.assign([0, 1])
    windows.add("a", 5, partition=0, offset=0)
    windows.add("a", 50, partition=1, offset=0)
    assert windows.idle(0) == [WindowResult("a", 0, 10, 1, 1.0)]
    restored = TumblingWindows(10)
    assert restored.restore(through_json(windows.snapshot([0, 1]))) == []
    assert restored.watermark == 50  # partition 0, idle, does not hold it back at 5
    assert restored.add("a", 6, partition=0, offset=1) == []
    assert restored.late == 1


def test_events_for_windows_the_last_owner_reported_are_late_here_only() -> None:
    ahead = TumblingWindows(10)
    ahead.add("a", 35, partition=1, offset=0)  # reports nothing; watermark 35
    behind = TumblingWindows(10)
    behind.assign([0, 1])
    behind.add("a", 12, partition=0, offset=0)
    assert behind.restore(ahead.snapshot([1])) == []
    assert behind.watermark == 12
    assert behind.snapshot([0, 1])[1]["floor"] == 35  # kept for the next owner as well
    assert behind.snapshot([0])[0]["floor"] == 12
    assert behind.add("a", 15, partition=1, offset=1) == []  # [10, 20) was reported there
    assert behind.late == 1
    assert behind.add("a", 16, partition=0, offset=1) == []  # but not partition 0's share
    assert behind.add("b", 41, partition=0, offset=2) == [WindowResult("a", 10, 20, 2, 2.0)]
    assert behind.add("a", 36, partition=1, offset=2) == []
    assert behind.flush() == [
        WindowResult("a", 30, 40, 2, 2.0),  # one counted there, one here
        WindowResult("b", 40, 50, 1, 1.0),
    ]


def test_restored_windows_that_are_due_already_close_at_once() -> None:
    source = TumblingWindows(10)
    source.assign([1, 2])  # partition 2 unread: both of 1's windows stay open
    source.add("a", 5, partition=1, offset=0)
    source.add("b", 22, partition=1, offset=1)
    destination = TumblingWindows(10)
    destination.add("a", 7, partition=0)
    assert destination.add("a", 25, partition=0) == [WindowResult("a", 0, 10, 1, 1.0)]
    # partition 1's share of [0, 10) comes after this one reported it: it is reported apart
    assert destination.restore(source.snapshot([1])) == [WindowResult("a", 0, 10, 1, 1.0)]
    assert destination.flush() == [
        WindowResult("a", 20, 30, 1, 1.0),
        WindowResult("b", 20, 30, 1, 1.0),
    ]
    empty = TumblingWindows(10)
    assert empty.restore(source.snapshot([2, 3])) == []
    assert empty.watermark == -math.inf  # 2 and 3 were assigned, never read


# -- sliding ---------------------------------------------------------------------------------


def slide(window: SlidingWindow, stream: list[Read]) -> list[WindowResult]:
    return [
        window.add(key, ts, value, partition=partition, offset=offset)
        for partition, offset, key, ts, value in stream
    ]


@given(reads(), sizes, st.integers(min_value=0, max_value=90))
def test_a_sliding_window_restored_midway_answers_what_an_unbroken_run_answers(
    stream: list[Read], size: float, cut: int
) -> None:
    unbroken = SlidingWindow(size)
    unbroken.assign(range(3))
    expected = slide(unbroken, stream)

    first = SlidingWindow(size)
    first.assign(range(3))
    before = slide(first, stream[:cut])
    second = SlidingWindow(size)
    second.restore(through_json(first.snapshot(range(3))))
    replayed = slide(second, stream)  # from the start: the first `cut` are skipped

    assert before == expected[:cut]
    assert replayed[cut:] == expected[cut:]
    assert all(result.count == 0 for result in replayed[:cut])
    assert (second.late, second.skipped) == (unbroken.late, min(cut, len(stream)))


def test_a_skipped_event_gets_an_empty_window_so_no_alert_fires_twice() -> None:
    window = SlidingWindow(60)
    for offset in range(3):
        window.add("bot", 100 + offset, partition=0, offset=offset)
    assert window.add("bot", 101, partition=0, offset=1) == WindowResult("bot", 41, 101, 0, 0)
    assert window.add("bot", 103, partition=0, offset=3).count == 4


def test_a_sliding_snapshot_holds_its_partitions_events_per_key() -> None:
    window = SlidingWindow(10)
    window.assign([0, 1])
    window.add("a", 1, 2.0, partition=0, offset=0)
    window.add("a", 3, partition=1, offset=0)
    window.add("b", 2, partition=0, offset=1)
    snapshots = window.snapshot([0])
    assert snapshots == {
        0: {
            "version": SNAPSHOT_VERSION,
            "kind": "sliding",
            "size": 10.0,
            "offset": 1,
            "mark": 2.0,
            "idle": False,
            "floor": 2.0,
            "late": 0,
            "events": [["a", 1.0, 2.0], ["b", 2.0, 1.0]],
        }
    }


def test_a_key_shared_by_partitions_keeps_the_others_events_when_one_leaves() -> None:
    window = SlidingWindow(10)
    window.assign([0, 1])
    window.add("a", 1, partition=0, offset=0)
    window.add("a", 2, partition=1, offset=0)
    window.add("b", 3, partition=1, offset=1)
    window.add("c", 3, partition=0, offset=1)
    moving = window.snapshot([1])
    window.release([1])
    assert window.keys == 2  # a keeps partition 0's event; b had only partition 1's
    assert window.add("a", 4, partition=0, offset=2) == WindowResult("a", -6, 4, 2, 2.0)
    elsewhere = SlidingWindow(10)
    elsewhere.add("a", 5, partition=2, offset=0)
    elsewhere.restore(moving)
    assert elsewhere.add("a", 6, partition=2, offset=1) == WindowResult("a", -4, 6, 3, 3.0)
    assert elsewhere.add("b", 7, partition=1, offset=2) == WindowResult("b", -3, 7, 2, 2.0)


def test_a_restored_partitions_old_events_are_late_behind_its_floor() -> None:
    ahead = SlidingWindow(10)
    ahead.add("a", 100, partition=1, offset=0)
    behind = SlidingWindow(10)
    behind.assign([0, 1])
    behind.add("z", 50, partition=0, offset=0)
    behind.restore(ahead.snapshot([1]))
    assert behind.add("b", 60, partition=1, offset=1).count == 0  # 60 < 100 - 10
    assert behind.add("y", 45, partition=0, offset=1).count == 1
    assert behind.late == 1


# -- refused snapshots -----------------------------------------------------------------------


def good_tumbling() -> dict[str, Any]:
    windows = TumblingWindows(10)
    windows.add("a", 1, partition=0, offset=0)
    return windows.snapshot([0])[0]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"version": 2}, "version 2"),
        ({"kind": "sliding"}, "of kind 'sliding'"),
        ({"offset": "7"}, "offset is '7'"),
        ({"offset": True}, "offset is True"),
        ({"offset": -2}, "offset is -2"),
        ({"mark": "x"}, "mark is 'x', not a number"),
        ({"floor": math.inf}, "floor is inf, not a finite time"),
        ({"idle": 1}, "idle is 1"),
        ({"late": -1}, "late is -1"),
        ({"windows": {}}, "windows must be a list"),
        ({"windows": [[0.0, "a", 1]]}, "windows must be a list of 4-item lists"),
        ({"windows": [[0.0, 5, 1, 1.0]]}, "key 5 is not a string"),
        ({"windows": [[0.0, "a", 0, 1.0]]}, "count is 0"),
        ({"windows": [[None, "a", 1, 1.0]]}, "start is None"),
        ({"windows": [[0.0, "a", 1, "1"]]}, "total is '1'"),
    ],
)
def test_malformed_tumbling_snapshots_are_decode_errors_that_say_what_to_do(
    change: dict[str, Any], problem: str
) -> None:
    windows = TumblingWindows(10)
    with pytest.raises(DecodeError, match=problem) as caught:
        windows.restore({0: {**good_tumbling(), **change}})
    assert "restore only what snapshot() returned" in str(caught.value)
    assert windows.snapshot([0])[0]["windows"] == []  # nothing was taken


def test_a_snapshot_that_is_not_a_dict_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="expected a dict, not list"):
        TumblingWindows(10).restore({0: []})
    with pytest.raises(DecodeError, match="expected a dict, not str"):
        SlidingWindow(10).restore({0: "{}"})


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"events": [["a", 1.0]]}, "events must be a list of 3-item lists"),
        ({"events": [["a", None, 1.0]]}, "event time is None"),
        ({"events": [["a", 1.0, False]]}, "value is False"),
        ({"events": [[None, 1.0, 1.0]]}, "key None is not a string"),
    ],
)
def test_malformed_sliding_snapshots_are_decode_errors(
    change: dict[str, Any], problem: str
) -> None:
    source = SlidingWindow(10)
    source.add("a", 1, partition=0, offset=0)
    with pytest.raises(DecodeError, match=problem):
        SlidingWindow(10).restore({0: {**source.snapshot([0])[0], **change}})


def test_a_snapshot_of_other_settings_is_a_config_error_naming_them() -> None:
    with pytest.raises(ConfigError, match=r"with size 10\.0, but this one has size 60\.0"):
        TumblingWindows(60).restore({0: good_tumbling()})
    with pytest.raises(ConfigError, match=r"grace 0\.0, but this one has grace 5\.0"):
        TumblingWindows(10, grace=5).restore({0: good_tumbling()})
    with pytest.raises(ConfigError, match="same size, or start the windows afresh"):
        SlidingWindow(60).restore({0: SlidingWindow(10).snapshot([0])[0]})


def test_restoring_a_partition_that_has_events_here_is_refused() -> None:
    windows = TumblingWindows(10)
    windows.add("a", 1, partition=0, offset=0)
    with pytest.raises(ConfigError, match="partition 0 already has events"):
        windows.restore({0: good_tumbling()})
    windows.add("a", 2, partition=1)  # no offset, but a watermark
    with pytest.raises(ConfigError, match="partition 1 already has events"):
        windows.restore({1: good_tumbling()})
    window = SlidingWindow(10)
    window.add("a", 1, partition=0, offset=0)
    with pytest.raises(ConfigError, match="release it first"):
        window.restore(window.snapshot([0]))
