"""What an operator is given, checked before it is used: sizes and graces in seconds (or
as timedeltas), and event times."""

from __future__ import annotations

import math
from datetime import timedelta

from conveyor.errors import ConfigError, MessageError


def seconds(what: str, value: float | timedelta) -> float:
    amount = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise ConfigError(f"{what} must be seconds or a timedelta, not {value!r}")
    if not math.isfinite(amount):
        raise ConfigError(f"{what} must be a finite number of seconds, not {value!r}")
    return float(amount)


def window_size(value: float | timedelta) -> float:
    size = seconds("window size", value)
    if size <= 0:
        raise ConfigError(f"window size must be more than 0 seconds, not {value!r}")
    return size


def check_timestamp(timestamp: float) -> None:
    # NaN would compare false with everything and silently corrupt the windows' order
    if not math.isfinite(timestamp):
        raise MessageError(
            f"event timestamp {timestamp!r} is not a finite number of seconds; "
            "give the event's time, e.g. its Unix timestamp"
        )
