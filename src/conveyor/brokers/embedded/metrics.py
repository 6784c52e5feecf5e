"""Read-only figures for operators: job records by task and status, run-time histograms,
and the declared exchanges. Each is one read of what is stored, for metrics endpoints."""

from __future__ import annotations

import itertools
import sqlite3

from conveyor.brokers.embedded.topology import Topology
from conveyor.brokers.types import ExchangeSpec, JobStatus, TaskStats

_PENDING = tuple(s.value for s in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RETRYING))
_TIMED = tuple(s.value for s in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD))


def _query(buckets: int) -> str:
    """One scan of the kept records: (task, status, bucket, count, seconds) groups.

    A pending job whose message is leased now is running; one whose delay or retry delay
    has passed is queued again (as jobs.get reads them). Jobs known only by their message
    rows are counted from those. ``bucket`` is the index of the
    first upper bound a finished job's run time fits under (``buckets`` past the last one),
    NULL for jobs without a run time.
    """
    bucket = " ".join(f"WHEN d <= :b{index} THEN {index}" for index in range(buckets))
    return f"""
SELECT task, status, CASE WHEN d IS NULL THEN NULL ELSE CASE {bucket} ELSE {buckets} END END,
    count(*), coalesce(sum(d), 0.0)
FROM (
    SELECT j.task AS task,
        CASE WHEN m.id IS NULL THEN j.status
             WHEN m.available_at_ms <= :now THEN '{JobStatus.QUEUED.value}'
             WHEN m.leased THEN '{JobStatus.RUNNING.value}'
             ELSE j.status END AS status,
        CASE WHEN j.status IN {_TIMED} AND j.last_attempt_at_ms IS NOT NULL
             THEN max(j.updated_at_ms - j.last_attempt_at_ms, 0) / 1000.0 END AS d
    FROM jobs AS j
    LEFT JOIN messages AS m ON m.id = j.message_rowid AND j.status IN {_PENDING}
    WHERE (j.expires_at_ms IS NULL OR j.expires_at_ms > :now) AND j.updated_at_ms >= :since
    UNION ALL
    SELECT m.job_task,
        CASE WHEN m.available_at_ms <= :now THEN '{JobStatus.QUEUED.value}'
             WHEN m.leased THEN '{JobStatus.RUNNING.value}'
             ELSE '{JobStatus.SCHEDULED.value}' END,
        NULL
    FROM messages AS m
    WHERE m.job_task IS NOT NULL AND m.enqueued_at_ms >= :since
        AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = m.message_id)
)
GROUP BY 1, 2, 3
"""


def job_stats(
    connection: sqlite3.Connection,
    now_ms: int,
    since_ms: int,
    buckets: tuple[float, ...],
) -> list[TaskStats]:
    parameters: dict[str, float] = {"now": now_ms, "since": since_ms}
    parameters.update({f"b{index}": bound for index, bound in enumerate(buckets)})
    statuses: dict[str, dict[JobStatus, int]] = {}
    within: dict[str, list[int]] = {}  # per task: how many ran within each bound
    totals: dict[str, tuple[int, float]] = {}  # per task: how many ran, for how long
    groups = connection.execute(_query(len(buckets)), parameters)
    for task, status, bucket, count, seconds in groups:
        by_status = statuses.setdefault(task, {})
        by_status[JobStatus(status)] = by_status.get(JobStatus(status), 0) + count
        if bucket is None:
            continue
        if bucket < len(buckets):
            within.setdefault(task, [0] * len(buckets))[bucket] += count
        ran, took = totals.get(task, (0, 0.0))
        totals[task] = (ran + count, took + seconds)
    stats = []
    for task in sorted(statuses):
        cumulative = itertools.accumulate(within.get(task, [0] * len(buckets)))
        ran, took = totals.get(task, (0, 0.0))
        stats.append(
            TaskStats(
                task=task,
                statuses=statuses[task],
                duration_buckets=tuple(zip(buckets, cumulative, strict=True)),
                duration_count=ran,
                duration_sum=took,
            )
        )
    return stats


def exchanges(topology: Topology) -> list[ExchangeSpec]:
    return sorted(
        (stored.spec for stored in topology.exchanges.values() if stored.spec is not None),
        key=lambda spec: spec.name,
    )
