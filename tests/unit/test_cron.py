"""Cron and interval schedules: by example, by error, and against croniter as a reference."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import CroniterBadDateError, croniter
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conveyor.cron import CronSchedule, Every, Schedule, parse_schedule
from conveyor.errors import ConfigError

NEW_YORK = ZoneInfo("America/New_York")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def fires(expression: str, start: datetime, count: int = 3) -> list[datetime]:
    schedule = CronSchedule.parse(expression)
    times = [schedule.next_after(start)]
    while len(times) < count:
        times.append(schedule.next_after(times[-1]))
    return times


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        ("* * * * *", utc(2024, 5, 1, 10, 0, 0), utc(2024, 5, 1, 10, 1)),
        ("* * * * *", utc(2024, 5, 1, 10, 0, 59, 999999), utc(2024, 5, 1, 10, 1)),
        ("*/15 * * * *", utc(2024, 5, 1, 10, 15), utc(2024, 5, 1, 10, 30)),
        ("10-40/10 * * * *", utc(2024, 5, 1, 10, 41), utc(2024, 5, 1, 11, 10)),
        ("0 9 * * mon-fri", utc(2024, 5, 3, 9, 0), utc(2024, 5, 6, 9, 0)),  # Fri -> Mon
        ("0 0 * * 7", utc(2024, 5, 1), utc(2024, 5, 5)),  # 7 is Sunday
        ("0 0 * * SUN", utc(2024, 5, 1), utc(2024, 5, 5)),
        ("0 0 1 JAN,jul *", utc(2024, 2, 1), utc(2024, 7, 1)),
        ("0 0 31 * *", utc(2024, 1, 31), utc(2024, 3, 31)),  # February and April have no 31st
        ("59 23 28-31/3 * *", utc(2023, 2, 1), utc(2023, 2, 28, 23, 59)),
        ("0 0 29 2 *", utc(2024, 3, 1), utc(2028, 2, 29)),
        ("0 0 29 2 *", utc(2096, 3, 1), utc(2104, 2, 29)),  # 2100 is not a leap year
        ("59 23 31 12 *", utc(2024, 12, 31, 23, 59), utc(2025, 12, 31, 23, 59)),
        ("@hourly", utc(2024, 5, 1, 10, 30), utc(2024, 5, 1, 11)),
        ("@daily", utc(2024, 5, 1, 10), utc(2024, 5, 2)),
        ("@midnight", utc(2024, 5, 1, 10), utc(2024, 5, 2)),
        ("@weekly", utc(2024, 5, 1), utc(2024, 5, 5)),
        ("@monthly", utc(2024, 5, 1), utc(2024, 6, 1)),
        ("@yearly", utc(2024, 5, 1), utc(2025, 1, 1)),
        ("@ANNUALLY", utc(2024, 5, 1), utc(2025, 1, 1)),
    ],
)
def test_next_after_examples(expression: str, start: datetime, expected: datetime) -> None:
    assert CronSchedule.parse(expression).next_after(start) == expected


def test_restricted_day_of_month_and_day_of_week_fire_on_either() -> None:
    # The 13th, or any Friday: Fri 3 May, Fri 10 May, Mon 13 May, Fri 17 May.
    assert [t.day for t in fires("0 0 13 * fri", utc(2024, 5, 1), 4)] == [3, 10, 13, 17]


def test_a_stepped_star_restricts_its_day_field() -> None:
    # Odd days or Mondays; Vixie cron would read */2 as unrestricted and AND the two fields.
    assert [t.day for t in fires("0 0 */2 * mon", utc(2024, 4, 30), 5)] == [1, 3, 5, 6, 7]


@pytest.mark.parametrize("day_of_week", ["*", "*,5"])
def test_an_unrestricted_day_of_week_leaves_day_of_month_alone(day_of_week: str) -> None:
    assert [t.day for t in fires(f"0 0 13 * {day_of_week}", utc(2024, 5, 1), 2)] == [13, 13]


def test_an_unrestricted_day_of_month_leaves_day_of_week_alone() -> None:
    assert [t.day for t in fires("0 0 * * fri", utc(2024, 5, 1), 2)] == [3, 10]


def test_the_result_keeps_the_time_zone_of_the_moment() -> None:
    tokyo = timezone(timedelta(hours=9))
    result = CronSchedule.parse("0 9 * * *").next_after(datetime(2024, 5, 1, 10, tzinfo=tokyo))
    assert result == datetime(2024, 5, 2, 9, tzinfo=tokyo)
    assert result.utcoffset() == timedelta(hours=9)


def test_a_wall_time_skipped_by_spring_forward_fires_as_far_past_the_jump() -> None:
    # New York, 10 March 2024: 02:00 EST jumps to 03:00 EDT.
    times = fires("*/30 * * * *", datetime(2024, 3, 10, 1, 10, tzinfo=NEW_YORK), 4)
    assert [(t.hour, t.minute) for t in times] == [(1, 30), (3, 0), (3, 30), (4, 0)]
    daily = CronSchedule.parse("30 2 * * *").next_after(datetime(2024, 3, 9, 12, tzinfo=NEW_YORK))
    assert daily == datetime(2024, 3, 10, 7, 30, tzinfo=UTC)  # 03:30 EDT


def test_a_wall_time_repeated_by_fall_back_fires_once_when_chained() -> None:
    # New York, 3 November 2024: 02:00 EDT falls back to 01:00 EST.
    times = fires("*/30 * * * *", datetime(2024, 11, 3, 0, 40, tzinfo=NEW_YORK), 4)
    assert [(t.hour, t.minute) for t in times] == [(1, 0), (1, 30), (2, 0), (2, 30)]
    assert times[2].astimezone(UTC) - times[1].astimezone(UTC) == timedelta(hours=1, minutes=30)


def test_a_moment_in_the_repeated_hour_gets_the_next_real_minute() -> None:
    second_pass = datetime(2024, 11, 3, 1, 10, tzinfo=NEW_YORK, fold=1)  # 01:10 EST
    result = CronSchedule.parse("*/15 * * * *").next_after(second_pass)
    assert result.astimezone(UTC) == datetime(2024, 11, 3, 6, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 24 * * *", "cron field 'hour' value 24 is outside 0-23"),
        ("60 * * * *", "cron field 'minute' value 60 is outside 0-59"),
        ("0 0 0 * *", "cron field 'day-of-month' value 0 is outside 1-31"),
        ("0 0 * 13 *", "cron field 'month' value 13 is outside 1-12"),
        ("0 0 * * 8", "cron field 'day-of-week' value 8 is outside 0-7"),
        ("0 0 * * monday", "cron field 'day-of-week' value 'monday' is not a number"),
        ("0 0 * jan-foo *", "cron field 'month' value 'foo' is not a number"),
        ("x * * * *", "cron field 'minute' value 'x' is not a number"),
        ("1,,2 * * * *", "cron field 'minute' value '' is not a number"),
        ("-5 * * * *", "cron field 'minute' value '' is not a number"),
        ("*/0 * * * *", "cron field 'minute' step '0' is not a whole number"),
        ("*/x * * * *", "cron field 'minute' step 'x' is not a whole number"),
        ("5/15 * * * *", "step needs a range: write 5-59/15"),
        ("40-10 * * * *", "range '40-10' runs backwards"),
        ("0 0 * *", "has 4 fields; write five"),
        ("@every", "has 1 fields; write five .* @yearly"),
        ("0 0 30 2 *", "never fires: none of its months has day 30"),
        ("0 0 31 4,6,9,11 *", "never fires"),
    ],
)
def test_bad_expressions_are_refused_naming_the_field(expression: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CronSchedule.parse(expression)


def test_an_impossible_day_with_a_restricted_weekday_still_fires_on_the_weekday() -> None:
    # 30 February never comes, but Mondays in February do.
    assert CronSchedule.parse("0 0 30 2 mon").next_after(utc(2024, 5, 1)) == utc(2025, 2, 3)


def test_a_schedule_matching_no_date_gives_up_after_a_bounded_search() -> None:
    # parse() refuses such schedules; the search has a horizon in case one is built by hand.
    every_day = tuple(range(7))
    impossible = CronSchedule("by hand", (0,), (0,), (30,), (2,), every_day, day_or=False)
    with pytest.raises(ConfigError, match="matches no date"):
        impossible.next_after(utc(2024, 1, 1))


def test_naive_moments_are_refused() -> None:
    with pytest.raises(ConfigError, match="naive; pass an aware datetime"):
        CronSchedule.parse("* * * * *").next_after(datetime(2024, 1, 1))
    with pytest.raises(ConfigError, match="naive"):
        Every(60).next_after(datetime(2024, 1, 1))


def test_every_ticks_on_multiples_of_the_interval_since_the_epoch() -> None:
    assert Every(60).next_after(utc(2024, 5, 1, 10, 0, 30)) == utc(2024, 5, 1, 10, 1)
    assert Every(60).next_after(utc(2024, 5, 1, 10, 1)) == utc(2024, 5, 1, 10, 2)
    assert Every(0.25).next_after(utc(2024, 5, 1, 10, 0, 0, 250000)) == utc(
        2024, 5, 1, 10, 0, 0, 500000
    )
    assert Every(7).next_after(utc(1970, 1, 1, 0, 0, 6)) == utc(1970, 1, 1, 0, 0, 7)
    tokyo = timezone(timedelta(hours=9))
    result = Every(3600).next_after(datetime(2024, 5, 1, 10, 30, tzinfo=tokyo))
    assert result == datetime(2024, 5, 1, 11, tzinfo=tokyo)
    assert result.tzinfo == tokyo


@given(
    st.floats(min_value=1e-3, max_value=1e6),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
)
def test_every_gives_the_first_tick_strictly_after(seconds: float, naive: datetime) -> None:
    moment = naive.replace(tzinfo=UTC)
    interval = timedelta(microseconds=round(seconds * 1e6))
    tick = Every(seconds).next_after(moment)
    assert moment < tick <= moment + interval
    assert (tick - datetime(1970, 1, 1, tzinfo=UTC)) % interval == timedelta(0)


@pytest.mark.parametrize("seconds", [0, -1, 1e-7, float("nan"), float("inf")])
def test_every_refuses_intervals_that_are_not_positive_and_finite(seconds: float) -> None:
    with pytest.raises(ConfigError, match="at least 1e-6 seconds"):
        Every(seconds)


def test_parse_schedule_takes_exactly_one_of_cron_or_every() -> None:
    assert parse_schedule("@daily", None) == CronSchedule.parse("@daily")
    assert parse_schedule(None, 90) == Every(90.0)
    assert parse_schedule(None, timedelta(minutes=5)) == Every(300.0)
    for cron, every in [(None, None), ("@daily", 60)]:
        with pytest.raises(ConfigError, match="exactly one of cron= or every="):
            parse_schedule(cron, every)


def test_both_kinds_satisfy_the_schedule_protocol() -> None:
    schedules: list[Schedule] = [CronSchedule.parse("@hourly"), Every(3600)]
    assert {s.next_after(utc(2024, 5, 1, 10, 30)) for s in schedules} == {utc(2024, 5, 1, 11)}


# --- croniter as a reference ------------------------------------------------------------

MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


@st.composite
def cron_fields(draw: st.DrawFn, lowest: int, highest: int, names: list[str]) -> str:
    def value() -> str:
        number = draw(st.integers(lowest, highest))
        if number - lowest < len(names) and draw(st.booleans()):
            return names[number - lowest].upper() if draw(st.booleans()) else names[number - lowest]
        return str(number)

    def item() -> str:
        kind = draw(st.sampled_from(["step", "value", "range", "stepped range"]))
        if kind == "step":
            return f"*/{draw(st.integers(1, highest))}"
        if kind == "value":
            return value()
        # croniter reads a range whose ends are equal as the whole field, so keep them apart.
        first = draw(st.integers(lowest, highest - 1))
        span = f"{first}-{draw(st.integers(first + 1, highest))}"
        return span if kind == "range" else f"{span}/{draw(st.integers(1, highest))}"

    if draw(st.integers(0, 4)) == 0:
        return "*"
    return ",".join(item() for _ in range(draw(st.integers(1, 3))))


expressions = st.tuples(
    cron_fields(0, 59, []),
    cron_fields(0, 23, []),
    cron_fields(1, 31, []),
    cron_fields(1, 12, MONTH_NAMES),
    cron_fields(0, 7, DAY_NAMES),
).map(" ".join)
moments = st.builds(
    lambda naive, offset: naive.replace(tzinfo=timezone(timedelta(minutes=offset))),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
    st.integers(-14 * 60, 14 * 60),
)


@settings(max_examples=500)
@given(expressions, moments)
def test_next_after_agrees_with_croniter(expression: str, moment: datetime) -> None:
    try:
        schedule = CronSchedule.parse(expression)
    except ConfigError:
        with pytest.raises(CroniterBadDateError):
            croniter(expression, moment).get_next(datetime)
        return
    # croniter ANDs a day field that lists every value (0-6, */1) with a stepped-star
    # other field, as Vixie cron does for */n; here only a bare * lifts the OR rule.
    assume(not schedule.day_or or (len(schedule.days) < 31 and len(schedule.weekdays) < 7))
    expected = croniter(expression, moment).get_next(datetime)
    assert schedule.next_after(moment) == expected
    assert schedule.next_after(moment).utcoffset() == moment.utcoffset()
