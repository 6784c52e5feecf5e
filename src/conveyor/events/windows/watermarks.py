"""The event time each partition has reached, and from it the operator's watermark."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable


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
