"""Autoscaling decisions: the depth rule, the cooldown, and the bounds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.errors import ConfigError
from conveyor.worker.autoscale import AutoscaleRules, decide

RULES = AutoscaleRules(minimum=2, maximum=8)  # default depths 50 and 500, cooldown 30 s


@pytest.mark.parametrize(
    ("depth", "expected"),
    [
        (0, 2),
        (49, 2),
        (50, 2),  # the edge of the low band: interpolation starts at the minimum
        (51, 3),  # any backlog past low gets help: rounded up
        (125, 3),  # 2 + 75 * 6 / 450 = 3.0
        (126, 4),
        (275, 5),  # half way
        (499, 8),
        (500, 8),
        (501, 8),
        (1_000_000, 8),
    ],
)
def test_desired_follows_the_default_depth_rule(depth: int, expected: int) -> None:
    assert RULES.desired(depth) == expected


@pytest.mark.parametrize(
    ("depth", "current", "now", "last_change", "expected", "why"),
    [
        (1000, 2, 100.0, 99.0, 8, "scale up at once, cooldown or not"),
        (300, 4, 100.0, 99.0, 6, "scale up part way at once"),
        (0, 8, 100.0, 99.0, 8, "scale down waits out the cooldown"),
        (0, 8, 129.9, 100.0, 8, "still inside the cooldown"),
        (0, 8, 130.0, 100.0, 2, "cooldown over: scale down"),
        (0, 8, 100.0, None, 2, "no change yet: nothing to cool down from"),
        (275, 5, 100.0, 99.0, 5, "already right"),
        (0, 0, 100.0, 99.0, 2, "below the minimum: brought up at once"),
        (0, 12, 100.0, 99.0, 8, "above the maximum: brought down at once, even in cooldown"),
        (0, 12, 200.0, 99.0, 2, "above the maximum, cooldown over: all the way down"),
    ],
)
def test_decide(
    depth: int, current: int, now: float, last_change: float | None, expected: int, why: str
) -> None:
    assert decide(RULES, depth, current, now, last_change) == expected, why


def test_zero_cooldown_scales_down_immediately() -> None:
    rules = AutoscaleRules(minimum=1, maximum=4, cooldown=0)
    assert decide(rules, 0, 4, 10.0, 10.0) == 1


def test_equal_minimum_and_maximum_pins_the_count() -> None:
    rules = AutoscaleRules(minimum=3, maximum=3)
    assert {rules.desired(depth) for depth in (0, 100, 10_000)} == {3}


def test_parse_reads_min_colon_max() -> None:
    assert AutoscaleRules.parse("2:8") == AutoscaleRules(2, 8)
    assert AutoscaleRules.parse(" 1 : 16 ") == AutoscaleRules(1, 16)


@pytest.mark.parametrize("text", ["", "8", "2-8", "2:8:9", "a:b", "2:", "-1:4", "1.5:4"])
def test_parse_refuses_anything_but_min_colon_max(text: str) -> None:
    with pytest.raises(ConfigError, match="--autoscale expects MIN:MAX"):
        AutoscaleRules.parse(text)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"minimum": 0, "maximum": 4}, "1 <= minimum <= maximum, not 0:4"),
        ({"minimum": 5, "maximum": 4}, "1 <= minimum <= maximum, not 5:4"),
        ({"minimum": 1, "maximum": 4, "low": -1}, "0 <= low < high"),
        ({"minimum": 1, "maximum": 4, "low": 500, "high": 500}, "low=500 high=500"),
        ({"minimum": 1, "maximum": 4, "cooldown": -1}, "cooldown must be >= 0 seconds"),
        ({"minimum": 1, "maximum": 4, "cooldown": float("nan")}, "cooldown must be >= 0"),
        ({"minimum": 1, "maximum": 4, "cooldown": "30"}, "cooldown must be >= 0"),
        ({"minimum": 1.5, "maximum": 4}, "minimum must be a whole number"),
        ({"minimum": 1, "maximum": True}, "maximum must be a whole number"),
        ({"minimum": 1, "maximum": 4, "high": 99.5}, "high must be a whole number"),
    ],
)
def test_invalid_rules_are_refused(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AutoscaleRules(**arguments)  # type: ignore[arg-type]


@st.composite
def rules(draw: st.DrawFn) -> AutoscaleRules:
    minimum = draw(st.integers(1, 50))
    low = draw(st.integers(0, 10_000))
    return AutoscaleRules(
        minimum=minimum,
        maximum=draw(st.integers(minimum, 100)),
        low=low,
        high=draw(st.integers(low + 1, 20_000)),
        cooldown=draw(st.floats(0, 600)),
    )


depths = st.integers(0, 50_000)


@given(rules(), depths, depths)
def test_desired_stays_in_bounds_and_never_falls_as_depth_grows(
    rules: AutoscaleRules, depth: int, other: int
) -> None:
    smaller, larger = sorted((depth, other))
    assert rules.minimum <= rules.desired(smaller) <= rules.desired(larger) <= rules.maximum


@given(
    rules(),
    depths,
    st.integers(0, 200),
    st.floats(0, 10_000),
    st.one_of(st.none(), st.floats(0, 10_000)),
)
def test_decide_stays_in_bounds_and_only_delays_scaling_down(
    rules: AutoscaleRules, depth: int, current: int, now: float, last_change: float | None
) -> None:
    result = decide(rules, depth, current, now, last_change)
    assert rules.minimum <= result <= rules.maximum
    assert result >= rules.desired(depth)  # never below what the depth calls for
    if result != rules.desired(depth):  # held up only by the cooldown, at the clamped count
        assert result == min(max(current, rules.minimum), rules.maximum)
        assert last_change is not None
        assert now - last_change < rules.cooldown
