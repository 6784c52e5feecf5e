"""What both operators track per partition, apart from their windows: its watermark, the
last offset counted (so that events read again count once) and the events dropped late,
and how that part of a partition's state goes into a snapshot and comes back."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.errors import ConfigError
from conveyor.events.windows.snapshot import (
    SNAPSHOT_VERSION,
    Snapshot,
    bad_snapshot,
    finite_or_none,
    read_time_or_none,
    read_whole,
)
from conveyor.events.windows.watermarks import Watermarks


@dataclass(frozen=True, slots=True)
class Position:
    """Where a snapshot leaves its partition: the part that both window kinds share."""

    offset: int
    mark: float
    idle: bool
    floor: float
    late: int


class Progress:
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
            "mark": finite_or_none(marks.mark(partition)),
            "idle": marks.is_idle(partition),
            "floor": finite_or_none(marks.limit(partition)),
            "late": self.late.get(partition, 0),
        }

    def check(
        self, what: str, kind: str, settings: Mapping[str, float], data: object
    ) -> Mapping[str, Any]:
        """Refuse data that is not a snapshot of this kind of operator, or of other settings."""
        if not isinstance(data, dict):
            raise bad_snapshot(what, f"expected a dict, not {type(data).__name__}")
        if data.get("version") != SNAPSHOT_VERSION or data.get("kind") != kind:
            found = f"version {data.get('version')!r} of kind {data.get('kind')!r}"
            raise bad_snapshot(what, f"{found}, not version {SNAPSHOT_VERSION} of {kind!r}")
        for name, expected in settings.items():
            if data.get(name) != expected:
                raise ConfigError(
                    f"the snapshot was taken by a {what} with {name} {data.get(name)!r}, but "
                    f"this one has {name} {expected!r}; restore it into one with the same "
                    f"{name}, or start the windows afresh under a new store name"
                )
        return data

    def read_position(self, what: str, partition: Hashable, data: Mapping[str, Any]) -> Position:
        if partition in self.offsets or self.watermarks.mark(partition) > -math.inf:
            raise ConfigError(
                f"partition {partition!r} already has events in this {what}; restore a "
                "partition before reading it, or release it first"
            )
        idle = data.get("idle")
        if not isinstance(idle, bool):
            raise bad_snapshot(what, f"idle is {idle!r}, not true or false")
        return Position(
            read_whole(what, "offset", data.get("offset"), -1),
            read_time_or_none(what, "mark", data.get("mark")),
            idle,
            read_time_or_none(what, "floor", data.get("floor")),
            read_whole(what, "late", data.get("late"), 0),
        )

    def take(self, partition: Hashable, position: Position) -> None:
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
