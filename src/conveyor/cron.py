"""When periodic work fires: 5-field cron expressions and fixed intervals. Pure: no I/O.

Both kinds answer one question, ``next_after(moment)``, so the scheduler need not know which
it holds, and the clock stays with the caller (a test passes whatever moment it likes).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol

from conveyor.errors import ConfigError

_Field = tuple[str, int, int, tuple[str, ...]]  # name, lowest, highest, names from lowest up
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FIELDS: tuple[_Field, ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _WEEKDAYS),
)
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_LONGEST_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_HORIZON_YEARS = 8  # Feb 29 can be 8 years off (2096 -> 2104); any valid schedule fires sooner
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class Schedule(Protocol):
    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment``, in ``moment``'s time zone."""
        ...


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A cron expression, expanded; build it with :meth:`parse`, which validates it."""

    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 is Sunday
    day_or: bool  # both day fields restricted: a day matching either one fires

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        """Parse ``minute hour day-of-month month day-of-week``, or a macro such as ``@daily``.

        Fields take ``*``, lists ``1,5``, ranges ``1-5`` and steps ``*/5`` or ``10-40/10``;
        months and weekdays also take names (``jan``, ``mon-fri``); 7 is Sunday, like 0.
        When both day fields are restricted, a day matching either one fires (Vixie cron).
        A day field is unrestricted when it holds a bare ``*`` (``*`` or ``*,5``); Vixie
        cron's quirk of also counting ``*/2`` as unrestricted is not copied.

        Raises:
            ConfigError: a field is malformed or out of range, or no date can ever match
                (``0 0 30 2 *``), so the mistake shows when declared, not at the first tick.
        """
        parts = _MACROS.get(expression.strip().lower(), expression).split()
        if len(parts) != len(_FIELDS):
            raise ConfigError(
                f"cron expression {expression!r} has {len(parts)} fields; write five (minute "
                f"hour day-of-month month day-of-week) or one of {', '.join(_MACROS)}"
            )
        minutes, hours, days, months, weekdays = map(_parse_field, parts, _FIELDS)
        day_or = "*" not in parts[2].split(",") + parts[4].split(",")
        if not day_or and all(days[0] > _LONGEST_MONTH[month - 1] for month in months):
            raise ConfigError(
                f"cron expression {expression!r} never fires: none of its months has day {days[0]}"
            )
        weekdays = tuple(sorted({day % 7 for day in weekdays}))
        return cls(expression, minutes, hours, days, months, weekdays, day_or)

    def next_after(self, moment: datetime) -> datetime:
        """The first matching minute strictly after ``moment``, in ``moment``'s time zone.

        Matching is on wall-clock time, as in cron. Chained calls fire a wall time that
        clocks going back repeat once, and a wall time that clocks going forward skip as
        far past the jump as it was into the skipped hour (02:30 fires at 03:30).

        Raises:
            ConfigError: ``moment`` is naive, so the time zone to match in is unknown.
        """
        zone = _zone_of(moment)
        wall = self._next_wall(moment.replace(tzinfo=None, second=0, microsecond=0))
        for fold in (0, 1):
            result = wall.replace(tzinfo=zone, fold=fold)
            real = result.astimezone(UTC)
            if real.astimezone(zone).replace(tzinfo=None) == wall and real > moment:
                return result
        return wall.replace(tzinfo=zone).astimezone(UTC).astimezone(zone)

    def _next_wall(self, start: datetime) -> datetime:
        moment = start + timedelta(minutes=1)
        last_year = moment.year + _HORIZON_YEARS
        while moment.year <= last_year:
            if moment.month not in self.months:
                carry, month = divmod(moment.month, 12)
                moment = datetime(moment.year + carry, month + 1, 1)
            elif not self._day_matches(moment):
                moment = moment.replace(hour=0, minute=0) + timedelta(days=1)
            elif moment.hour not in self.hours or moment.minute > self.minutes[-1]:
                moment = moment.replace(minute=0) + timedelta(hours=1)
            else:
                return moment.replace(minute=self.minutes[bisect_left(self.minutes, moment.minute)])
        raise ConfigError(f"cron expression {self.expression!r} matches no date; check its days")

    def _day_matches(self, moment: datetime) -> bool:
        by_date = moment.day in self.days
        by_weekday = moment.isoweekday() % 7 in self.weekdays
        return (by_date or by_weekday) if self.day_or else (by_date and by_weekday)


@dataclass(frozen=True, slots=True)
class Every:
    """Fire every ``seconds``, on whole multiples of the interval since the Unix epoch.

    Anchoring to the epoch rather than to start-up makes every process compute the same
    tick times, so a restart or a change of leader neither doubles nor skips a tick.
    """

    seconds: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds >= 1e-6):
            raise ConfigError(f"every={self.seconds!r}: give an interval of at least 1e-6 seconds")

    def next_after(self, moment: datetime) -> datetime:
        """The next tick strictly after ``moment``, in ``moment``'s time zone.

        Raises:
            ConfigError: ``moment`` is naive.
        """
        zone = _zone_of(moment)
        interval = round(self.seconds * 1e6)
        elapsed = (moment - _EPOCH) // _MICROSECOND  # whole microseconds: no float drift
        return (_EPOCH + (elapsed // interval + 1) * interval * _MICROSECOND).astimezone(zone)


def parse_schedule(cron: str | None, every: float | timedelta | None) -> CronSchedule | Every:
    """The schedule a periodic task declares: a cron expression or an interval, not both.

    Raises:
        ConfigError: both or neither are given, or the one given is invalid.
    """
    if cron is not None and every is None:
        return CronSchedule.parse(cron)
    if every is not None and cron is None:
        return Every(every.total_seconds() if isinstance(every, timedelta) else float(every))
    raise ConfigError("give a periodic task exactly one of cron= or every=, not both or neither")


def _parse_field(text: str, field: _Field) -> tuple[int, ...]:
    name, lowest, highest, names = field

    def value(token: str) -> int:
        if token.lower() in names:
            return names.index(token.lower()) + lowest
        if not (token.isascii() and token.isdigit()):
            raise ConfigError(f"cron field {name!r} value {token!r} is not a number")
        if not lowest <= (number := int(token)) <= highest:
            raise ConfigError(f"cron field {name!r} value {number} is outside {lowest}-{highest}")
        return number

    values: set[int] = set()
    for item in text.split(","):
        span, slash, step = item.partition("/")
        if slash and not (step.isascii() and step.isdigit() and int(step) > 0):
            raise ConfigError(f"cron field {name!r} step {step!r} is not a whole number ≥ 1")
        if span == "*":
            first, last = lowest, highest
        elif "-" in span:
            first, last = map(value, span.split("-", 1))
            if first > last:
                raise ConfigError(f"cron field {name!r} range {span!r} runs backwards")
        elif slash:
            raise ConfigError(
                f"cron field {name!r} step needs a range: write {span}-{highest}/{step}"
            )
        else:
            first = last = value(span)
        values.update(range(first, last + 1, int(step or 1)))
    return tuple(sorted(values))


def _zone_of(moment: datetime) -> tzinfo:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ConfigError(f"{moment} is naive; pass an aware datetime, e.g. datetime.now(UTC)")
    return moment.tzinfo
