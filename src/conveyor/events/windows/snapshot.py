"""The snapshots' format: one partition's share of an operator's state as JSON can hold it,
and the checks that read its fields back, so that a snapshot that is damaged, or not one at
all, is refused with a DecodeError instead of corrupting the windows it joins."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any, TypeVar

from conveyor.errors import DecodeError

Snapshot = dict[str, Any]
"""One partition's share of an operator's state, as JSON can hold it."""

SNAPSHOT_VERSION = 1

P = TypeVar("P", bound=Hashable)


def bad_snapshot(what: str, problem: str) -> DecodeError:
    return DecodeError(
        f"this is not a {what} snapshot: {problem}; restore only what snapshot() returned, "
        "or start the windows afresh (a store under a new name has an empty changelog)"
    )


def read_number(what: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_snapshot(what, f"{name} is {value!r}, not a number")
    return float(value)


def read_time(what: str, name: str, value: object) -> float:
    number = read_number(what, name, value)
    if not math.isfinite(number):
        raise bad_snapshot(what, f"{name} is {value!r}, not a finite time")
    return number


def read_time_or_none(what: str, name: str, value: object) -> float:
    """A time that ``None`` stands for ``-inf`` in (JSON has no infinity)."""
    return -math.inf if value is None else read_time(what, name, value)


def read_whole(what: str, name: str, value: object, lowest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise bad_snapshot(what, f"{name} is {value!r}, not a whole number >= {lowest}")
    return value


def read_rows(what: str, data: Mapping[str, Any], name: str, width: int) -> list[list[Any]]:
    rows = data.get(name)
    if not isinstance(rows, list) or not all(
        isinstance(row, list) and len(row) == width for row in rows
    ):
        raise bad_snapshot(what, f"{name} must be a list of {width}-item lists")
    return rows


def read_key(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise bad_snapshot(what, f"key {value!r} is not a string")
    return value


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
