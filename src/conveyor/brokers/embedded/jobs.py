"""Job records, settled in the same transaction as their messages; workers; rate limits.

A job's status is stored only when it changes for a reason the message cannot show
(submitted, retrying, finished). Whether it is running is read off its message's live
lease, so starting a job costs no write.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from conveyor.brokers.embedded import browse, dead_letters, queues
from conveyor.brokers.embedded.rows import Changes, Prepared
from conveyor.brokers.embedded.topology import Topology
from conveyor.brokers.results import JobStart, check_same_request
from conveyor.brokers.types import (
    DeadLetterReason,
    JobPage,
    JobQuery,
    JobRecord,
    JobStatus,
    JobSubmission,
    Settlement,
    WorkerInfo,
)
from conveyor.errors import JobNotFound

_JOB_COLUMNS = (
    "id, task, queue, status, attempts, created_at_ms, updated_at_ms, scheduled_for_ms,"
    " first_attempt_at_ms, last_attempt_at_ms, result, error, progress, idempotency_key,"
    " message_rowid, request_digest"
)
_PENDING = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RETRYING)
_ACKED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def submit(
    connection: sqlite3.Connection,
    topology: Topology,
    submissions: Sequence[tuple[JobSubmission, Prepared]],
    now_ms: int,
    changes: Changes,
) -> list[JobRecord]:
    """Record each job and enqueue its message in the caller's transaction.

    Consecutive submissions to one queue with one delay and no idempotency key go in
    together: one insert of their messages, whose rowids are consecutive, and one of their
    jobs. A keyed one goes alone, so that a later one with the same key finds it.
    """
    records: list[JobRecord] = []
    run: list[tuple[JobSubmission, Prepared]] = []
    for submission, prepared in submissions:
        if run and (
            submission.idempotency_key is not None
            or submission.queue != run[0][0].queue
            or submission.delay != run[0][0].delay
        ):
            records += _enqueue(connection, topology, run, now_ms, changes)
            run = []
        if submission.idempotency_key is not None:
            existing = _existing(connection, submission, now_ms)
            if existing is not None:
                check_same_request(submission, existing)
                records.append(existing)
                continue
            records += _enqueue(connection, topology, [(submission, prepared)], now_ms, changes)
            continue
        run.append((submission, prepared))
    if run:
        records += _enqueue(connection, topology, run, now_ms, changes)
    return records


def _enqueue(
    connection: sqlite3.Connection,
    topology: Topology,
    run: Sequence[tuple[JobSubmission, Prepared]],
    now_ms: int,
    changes: Changes,
) -> list[JobRecord]:
    """Store the messages of ``run`` (one queue, one delay), then their jobs."""
    first = run[0][0]
    queues.store(
        connection,
        topology,
        [prepared for _, prepared in run],
        exchange="",
        mandatory=True,
        available_at_ms=now_ms + int(first.delay * 1000),
        now_ms=now_ms,
        changes=changes,
    )
    (last_rowid,) = connection.execute("SELECT last_insert_rowid()").fetchone()
    queue = topology.queue(first.queue).spec.name
    rowid = last_rowid - len(run) + 1
    return _insert(connection, [s for s, _ in run], queue, rowid, now_ms)


def create(
    connection: sqlite3.Connection, submissions: Sequence[JobSubmission], now_ms: int
) -> list[JobRecord]:
    """Record jobs whose messages another broker carries (no message row to follow)."""
    records = []
    for submission in submissions:
        existing = _existing(connection, submission, now_ms)
        records += (
            [existing]
            if existing
            else _insert(connection, [submission], submission.queue, None, now_ms)
        )
    return records


def _existing(
    connection: sqlite3.Connection, submission: JobSubmission, now_ms: int
) -> JobRecord | None:
    """The job an idempotency key already names within its window, if any."""
    if submission.idempotency_key is None:
        return None
    row = connection.execute(
        f"SELECT {_JOB_COLUMNS} FROM jobs WHERE idempotency_key = ?"
        " AND created_at_ms > ? ORDER BY created_at_ms DESC LIMIT 1",
        (submission.idempotency_key, now_ms - int(submission.idempotency_window * 1000)),
    ).fetchone()
    return None if row is None else _record(connection, row, now_ms)


def _insert(
    connection: sqlite3.Connection,
    submissions: Sequence[JobSubmission],
    queue: str,
    first_rowid: int | None,
    now_ms: int,
) -> list[JobRecord]:
    """Insert the jobs; the n-th one's message is row ``first_rowid + n`` (None: none here)."""
    rows = []
    records = []
    for number, submission in enumerate(submissions):
        delayed = submission.delay > 0
        status = JobStatus.SCHEDULED if delayed else JobStatus.QUEUED
        scheduled_for = now_ms + int(submission.delay * 1000) if delayed else None
        job_id = submission.message.id
        key = submission.idempotency_key
        rows.append(
            (
                job_id,
                submission.task,
                queue,
                status.value,
                key,
                now_ms,
                now_ms,
                scheduled_for,
                None if first_rowid is None else first_rowid + number,
                int(submission.result_ttl * 1000),
                submission.request_digest,
            )
        )
        records.append(
            JobRecord(
                id=job_id,
                task=submission.task,
                queue=queue,
                status=status,
                attempts=0,
                created_at=now_ms / 1000,
                updated_at=now_ms / 1000,
                scheduled_for=None if scheduled_for is None else scheduled_for / 1000,
                idempotency_key=key,
                request_digest=submission.request_digest,
            )
        )
    connection.executemany(
        "INSERT INTO jobs (id, task, queue, status, idempotency_key, created_at_ms,"
        " updated_at_ms, scheduled_for_ms, message_rowid, result_ttl_ms, request_digest)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    return records


def discard(connection: sqlite3.Connection, job_ids: Sequence[str]) -> None:
    connection.execute(
        "DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(job_ids)),),
    )


def get(connection: sqlite3.Connection, job_id: str, now_ms: int) -> JobRecord:
    row = connection.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise JobNotFound(job_id)
    return _record(connection, row, now_ms)


_LIVE = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RETRYING, JobStatus.RUNNING}


def listing(connection: sqlite3.Connection, query: JobQuery, now_ms: int) -> JobPage:
    """Kept records by ``query``, newest update first (a scan: no index is kept on the
    update time, which every settlement would have to move).

    A finished status is filtered in SQL; a live one (queued, scheduled, retrying,
    running) is read off each pending job's message, so those rows are read and filtered
    here, as ``get`` would report them.
    """
    where = ["(expires_at_ms IS NULL OR expires_at_ms > ?)"]
    parameters: list[Any] = [now_ms]
    for column, value in (("task", query.task), ("queue", query.queue)):
        if value is not None:
            where.append(f"{column} = ?")
            parameters.append(value)
    if query.since is not None:
        where.append("updated_at_ms >= ?")
        parameters.append(int(query.since * 1000))
    live = query.status in _LIVE
    if query.status is not None:
        statuses = [s.value for s in _PENDING] if live else [query.status.value]
        where.append(f"status IN ({', '.join('?' * len(statuses))})")
        parameters += statuses
    condition = " AND ".join(where)
    select = (
        f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {condition} ORDER BY updated_at_ms DESC, id DESC"
    )
    if live:
        rows = connection.execute(select, parameters).fetchall()
        return query.page([_record(connection, row, now_ms) for row in rows])
    (total,) = connection.execute(
        f"SELECT count(*) FROM jobs WHERE {condition}", parameters
    ).fetchone()
    page = connection.execute(
        f"{select} LIMIT ? OFFSET ?", [*parameters, query.limit, query.offset]
    ).fetchall()
    return JobPage([_record(connection, row, now_ms) for row in page], int(total))


def _record(connection: sqlite3.Connection, row: Sequence[Any], now_ms: int) -> JobRecord:
    """A job as its row and its message say: a pending job's message tells whether an
    attempt runs (leased, and which attempt) or when the next one is due."""
    status, attempts, scheduled_for_ms = JobStatus(row[3]), row[4], row[7]
    if status in _PENDING and row[14] is not None:
        message = connection.execute(
            "SELECT leased, available_at_ms, delivery_count FROM messages WHERE id = ?",
            (row[14],),
        ).fetchone()
        if message is not None and message[1] > now_ms and message[0]:
            status, attempts = JobStatus.RUNNING, max(attempts, message[2])
        elif message is not None and message[1] > now_ms:
            scheduled_for_ms = message[1]
        elif message is not None:
            status = JobStatus.QUEUED
    return JobRecord(
        id=row[0],
        task=row[1],
        queue=row[2],
        status=status,
        attempts=attempts,
        created_at=row[5] / 1000,
        updated_at=row[6] / 1000,
        scheduled_for=_seconds(scheduled_for_ms),
        first_attempt_at=_seconds(row[8]),
        last_attempt_at=_seconds(row[9]),
        result=_json(row[10]),
        error=_json(row[11]),
        progress=_json(row[12]),
        idempotency_key=row[13],
        request_digest=row[15],
    )


def settle(
    connection: sqlite3.Connection,
    topology: Topology,
    settlements: Sequence[Settlement],
    now_ms: int,
    changes: Changes,
) -> list[Settlement]:
    """Ack, requeue or dead-letter each delivery and update its job; returns the lapsed."""
    lost: list[Settlement] = []
    done: list[Settlement] = []
    acking = [s for s in settlements if s.status in _ACKED]
    lapsed_tags = set(
        queues.ack(connection, topology, [s.delivery for s in acking], now_ms, changes)
    )
    if not lapsed_tags and len(acking) == len(settlements):
        record_outcomes(connection, settlements, now_ms)
        return lost
    for settlement in settlements:
        delivery = settlement.delivery
        if settlement.status is JobStatus.RETRYING:
            available_at = now_ms + int(settlement.retry_delay * 1000)
            settled = queues.requeue(connection, delivery, available_at, now_ms)
            changes.woken_queue_ids.add(topology.queue(delivery.queue).id)
        elif settlement.status is JobStatus.DEAD:
            rows = browse.leased_rows(connection, [delivery], now_ms)
            settled = bool(rows)
            queue = topology.queue(delivery.queue)
            dead_letters.dead_letter(
                connection,
                topology,
                queue,
                rows,
                DeadLetterReason.REJECTED,
                now_ms,
                changes,
                extra_headers={"x-failure": failure_record(connection, settlement, now_ms)},
            )
        else:
            settled = delivery.tag not in lapsed_tags
        (done if settled else lost).append(settlement)
    record_outcomes(connection, done, now_ms)
    return lost


def record_outcomes(
    connection: sqlite3.Connection, settled: Sequence[Settlement], now_ms: int
) -> None:
    """Update the job records of settled deliveries, one statement per distinct outcome.

    Jobs that ended alike (same status, attempt, result, error and start millisecond) share
    one UPDATE over a JSON list of their ids: binding ten parameters per job costs more
    than SQLite's work on the row.
    """
    outcomes: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for settlement in settled:
        status, result, error = settlement.status, settlement.result, settlement.error
        started_ms = int(settlement.started_at * 1000)
        outcome = (
            status.value,
            settlement.delivery.delivery_count,
            None if result is None else _dumps(result),
            None if error is None else _dumps(error),
            started_ms,
            started_ms,
            now_ms,
            status.finished,
            now_ms,
        )
        outcomes[outcome].append(settlement.delivery.message.id)
    for outcome, job_ids in outcomes.items():
        connection.execute(
            "UPDATE jobs SET status = ?, attempts = ?, result = ?, error = ?,"
            " first_attempt_at_ms = coalesce(first_attempt_at_ms, ?), last_attempt_at_ms = ?,"
            " updated_at_ms = ?, expires_at_ms = CASE WHEN ? THEN ? + result_ttl_ms END"
            " WHERE id IN (SELECT value FROM json_each(?))",
            (*outcome, json.dumps(job_ids)),
        )


def failure_record(
    connection: sqlite3.Connection, settlement: Settlement, now_ms: int
) -> dict[str, Any]:
    """What an operator needs to judge a dead letter, stored in its ``x-failure`` header."""
    error = dict(settlement.error or {})
    row = connection.execute(
        "SELECT first_attempt_at_ms, task FROM jobs WHERE id = ?",
        (settlement.delivery.message.id,),
    ).fetchone()
    first_ms = row[0] if row is not None and row[0] is not None else None
    return {
        "task": None if row is None else row[1],
        "first_attempt_at": settlement.started_at if first_ms is None else first_ms / 1000,
        "reason": error.get("reason"),
        "error_type": error.get("type"),
        "error_message": error.get("message"),
        "traceback": error.get("traceback"),
        "attempts": settlement.delivery.delivery_count,
        "last_attempt_at": settlement.started_at,
        "failed_at": now_ms / 1000,
        "queue": settlement.delivery.queue,
        "worker": settlement.worker,
    }


def record_starts(connection: sqlite3.Connection, starts: Sequence[JobStart], now_ms: int) -> None:
    connection.executemany(
        "UPDATE jobs SET status = ?, attempts = ?, first_attempt_at_ms ="
        " coalesce(first_attempt_at_ms, ?), last_attempt_at_ms = ?, updated_at_ms = ?"
        " WHERE id = ?",
        [
            (
                JobStatus.RUNNING.value,
                start.attempt,
                int(start.started_at * 1000),
                int(start.started_at * 1000),
                now_ms,
                start.job_id,
            )
            for start in starts
        ],
    )


def cancelled(connection: sqlite3.Connection, job_ids: Sequence[str]) -> set[str]:
    return {
        job_id
        for (job_id,) in connection.execute(
            "SELECT id FROM jobs WHERE id IN (SELECT value FROM json_each(?)) AND status = ?",
            (json.dumps(list(job_ids)), JobStatus.CANCELLED.value),
        )
    }


def set_progress(connection: sqlite3.Connection, job_id: str, progress: Any, now_ms: int) -> None:
    if (
        connection.execute(
            "UPDATE jobs SET progress = ?, updated_at_ms = ? WHERE id = ?",
            (_dumps(progress), now_ms, job_id),
        ).rowcount
        == 0
    ):
        raise JobNotFound(job_id)


def cancel(connection: sqlite3.Connection, topology: Topology, job_id: str, now_ms: int) -> bool:
    row = connection.execute(
        "SELECT status, message_rowid FROM jobs WHERE id = ?", (job_id,)
    ).fetchone()
    if row is None:
        raise JobNotFound(job_id)
    if JobStatus(row[0]) not in _PENDING:
        return False
    if row[1] is not None and not browse.remove_waiting(connection, topology, row[1], now_ms):
        return False
    connection.execute(
        "UPDATE jobs SET status = ?, updated_at_ms = ?, expires_at_ms = ? + result_ttl_ms"
        " WHERE id = ?",
        (JobStatus.CANCELLED.value, now_ms, now_ms, job_id),
    )
    return True


def requeued(connection: sqlite3.Connection, moved: Mapping[str, int | None], now_ms: int) -> None:
    """Jobs whose messages were moved back into a queue (to ``rowid``) are pending again."""
    connection.executemany(
        "UPDATE jobs SET status = ?, message_rowid = ?, updated_at_ms = ?, expires_at_ms = NULL"
        " WHERE id = ?",
        [(JobStatus.QUEUED.value, rowid, now_ms, job_id) for job_id, rowid in moved.items()],
    )


def succeeded_keys(connection: sqlite3.Connection, keys: Sequence[str]) -> set[str]:
    return {
        key
        for (key,) in connection.execute(
            f"SELECT idempotency_key FROM jobs WHERE idempotency_key IN"
            f" ({','.join('?' * len(keys))}) AND status = ?",
            (*keys, JobStatus.SUCCEEDED.value),
        )
    }


def expire(connection: sqlite3.Connection, now_ms: int) -> None:
    connection.execute("DELETE FROM jobs WHERE expires_at_ms <= ?", (now_ms,))


def heartbeat(connection: sqlite3.Connection, worker: WorkerInfo, now_ms: int) -> None:
    info = {name: getattr(worker, name) for name in WorkerInfo.__dataclass_fields__}
    connection.execute(
        "INSERT OR REPLACE INTO workers (id, info, heartbeat_at_ms) VALUES (?, ?, ?)",
        (worker.id, json.dumps(info), now_ms),
    )


def list_workers(connection: sqlite3.Connection) -> list[WorkerInfo]:
    workers = []
    for info, heartbeat_at_ms in connection.execute(
        "SELECT info, heartbeat_at_ms FROM workers ORDER BY id"
    ):
        fields = json.loads(info)
        fields["queues"] = tuple(fields["queues"])
        fields["heartbeat_at"] = heartbeat_at_ms / 1000
        workers.append(WorkerInfo(**fields))
    return workers


def acquire_rate(
    connection: sqlite3.Connection, key: str, per_second: float, burst: int, now_ms: int
) -> float:
    """Token bucket: refill at ``per_second`` up to ``burst``; take one if there is one."""
    row = connection.execute(
        "SELECT tokens, updated_at_ms FROM rate_limits WHERE key = ?", (key,)
    ).fetchone()
    tokens = (
        float(burst) if row is None else min(burst, row[0] + (now_ms - row[1]) * per_second / 1000)
    )
    wait = 0.0 if tokens >= 1 else (1 - tokens) / per_second
    connection.execute(
        "INSERT OR REPLACE INTO rate_limits (key, tokens, updated_at_ms) VALUES (?, ?, ?)",
        (key, tokens - 1 if wait == 0.0 else tokens, now_ms),
    )
    return wait


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _seconds(milliseconds: int | None) -> float | None:
    return None if milliseconds is None else milliseconds / 1000
