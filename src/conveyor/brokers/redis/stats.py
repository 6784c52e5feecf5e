"""Per-task figures over the kept job records, counted here: Redis has no GROUP BY."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from conveyor.brokers.types import JobStatus, TaskStats

TIMED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD})


@dataclass(slots=True)
class _Task:
    statuses: dict[JobStatus, int] = field(default_factory=dict)
    within: list[int] = field(default_factory=list)
    ran: int = 0
    took: float = 0.0


def task_stats(
    rows: Iterable[tuple[str, JobStatus, float | None]], bounds: tuple[float, ...]
) -> list[TaskStats]:
    """Rows are (task, status, seconds the last attempt ran, if the job has finished)."""
    tasks: dict[str, _Task] = {}
    for task, status, duration in rows:
        entry = tasks.get(task)
        if entry is None:
            entry = tasks[task] = _Task(within=[0] * len(bounds))
        entry.statuses[status] = entry.statuses.get(status, 0) + 1
        if duration is None:
            continue
        bucket = bisect.bisect_left(bounds, duration)
        if bucket < len(bounds):
            entry.within[bucket] += 1
        entry.ran += 1
        entry.took += duration
    return [
        TaskStats(
            task=name,
            statuses=entry.statuses,
            duration_buckets=tuple(zip(bounds, itertools.accumulate(entry.within), strict=True)),
            duration_count=entry.ran,
            duration_sum=entry.took,
        )
        for name, entry in sorted(tasks.items())
    ]


def duration(status: JobStatus, last_attempt_at: str | None, updated_at: str) -> float | None:
    """How long a finished job's last attempt ran: from its start until its outcome."""
    if status not in TIMED or last_attempt_at is None:
        return None
    return max(float(updated_at) - float(last_attempt_at), 0.0)
