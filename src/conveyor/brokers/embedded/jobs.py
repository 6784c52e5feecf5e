"""Job records, settled in the same transaction as their messages; workers; rate limits.

A job's status is stored only when it changes for a reason the message cannot show
(retrying, finished, cancelled, moved). Until then a job submitted without an idempotency
key has no row here: its message row, which carries the task's name and result TTL, is its
record, found by the rowid the job's id ends with. Whether it is running is read off its
message's live lease, so neither submitting nor starting a job costs a job-record write.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from conveyor.brokers.embedded import browse, dead_letters, queues
from conveyor.brokers.embedded.rows import Changes, Prepared, keep_job_records
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
from conveyor.errors import BrokerError, JobNotFound

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
    """Store the messages of ``run`` (one queue, one delay); a keyed job also gets its row.

    The messages take consecutive rowids from one more than the largest, as SQLite assigns
    them (the write lock is held). An unkeyed job's id ends with its message's rowid, so
    ``get`` finds the message without an index on message ids.
    """
    first = run[0][0]
    keyed = first.idempotency_key is not None
    (next_rowid,) = connection.execute("SELECT coalesce(max(id), 0) + 1 FROM messages").fetchone()
    if next_rowid + len(run) > _MAX_ROWID:
        raise BrokerError("the messages table has used up its rowids: use a new database")
    if not keyed:
        for number, (submission, _) in enumerate(run):
            submission.message.id = _id_at(submission.message.id, next_rowid + number)
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
    queue = topology.queue(first.queue).spec.name
    submitted = [s for s, _ in run]
    if keyed:
        return _insert(connection, submitted, queue, next_rowid, now_ms)
    return [_submitted(submission, queue, now_ms) for submission in submitted]


_MAX_ROWID = 2**63 - 1
_ROWID_DIGITS = 12


def _id_at(job_id: str, rowid: int) -> str:
    """The job's id with its random part replaced by its message's rowid (its time part,
    the first 14 hex digits of ``new_message_id``, keeps ids ordered by creation)."""
    return f"{job_id[:14]}{rowid:0{_ROWID_DIGITS}x}"


def _rowid_of(job_id: str) -> int | None:
    """The message rowid an unkeyed job's id ends with, if it can end with one."""
    digits = job_id[-_ROWID_DIGITS:]
    if len(job_id) <= _ROWID_DIGITS or not all(c in "0123456789abcdef" for c in digits):
        return None
    return int(digits, 16)


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


def _submitted(submission: JobSubmission, queue: str, now_ms: int) -> JobRecord:
    delayed = submission.delay > 0
    scheduled_for = now_ms + int(submission.delay * 1000) if delayed else None
    return JobRecord(
        id=submission.message.id,
        task=submission.task,
        queue=queue,
        status=JobStatus.SCHEDULED if delayed else JobStatus.QUEUED,
        attempts=0,
        created_at=now_ms / 1000,
        updated_at=now_ms / 1000,
        scheduled_for=None if scheduled_for is None else scheduled_for / 1000,
        idempotency_key=submission.idempotency_key,
        request_digest=submission.request_digest,
    )


def _insert(
    connection: sqlite3.Connection,
    submissions: Sequence[JobSubmission],
    queue: str,
    first_rowid: int | None,
    now_ms: int,
) -> list[JobRecord]:
    """Insert the jobs; the n-th one's message is row ``first_rowid + n`` (None: none here)."""
    records = [_submitted(submission, queue, now_ms) for submission in submissions]
    rows = [
        (
            record.id,
            record.task,
            queue,
            record.status.value,
            record.idempotency_key,
            now_ms,
            now_ms,
            None if record.scheduled_for is None else now_ms + int(submission.delay * 1000),
            None if first_rowid is None else first_rowid + number,
            int(submission.result_ttl * 1000),
            submission.request_digest,
        )
        for number, (submission, record) in enumerate(zip(submissions, records, strict=True))
    ]
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
    if row is None and (rowid := _rowid_of(job_id)) is not None:
        row = connection.execute(
            f"{_PENDING_SELECT} WHERE m.id = ? AND m.message_id = ? AND m.job_task IS NOT NULL",
            (rowid, job_id),
        ).fetchone()
    if row is None:
        raise JobNotFound(job_id)
    return _record(connection, row, now_ms)


# A job without a row of its own, read off its message row in the shape of _JOB_COLUMNS.
# A delayed one not yet delivered is scheduled; ``_record`` reads the rest off the lease.
_PENDING_SELECT = (
    "SELECT m.message_id, m.job_task, q.name, CASE WHEN m.delivery_count = 0"
    f" AND m.available_at_ms > m.enqueued_at_ms THEN '{JobStatus.SCHEDULED.value}'"
    f" ELSE '{JobStatus.QUEUED.value}' END, 0, m.enqueued_at_ms, m.enqueued_at_ms,"
    " NULL, NULL, NULL, NULL, NULL, NULL, NULL, m.id, NULL"
    " FROM messages AS m JOIN queues AS q ON q.id = m.queue_id"
)
_WITHOUT_ROW = (
    "m.job_task IS NOT NULL AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = m.message_id)"
)


def _materialize(connection: sqlite3.Connection, job_id: str, now_ms: int) -> bool:
    """Give a job that has only its message row a row of its own; False if it has none."""
    rowid = _rowid_of(job_id)
    if rowid is None:
        return False
    found = connection.execute(
        "SELECT 1 FROM messages WHERE id = ? AND message_id = ? AND job_task IS NOT NULL",
        (rowid, job_id),
    ).fetchone()
    if found is not None:
        keep_job_records(connection, [rowid], JobStatus.QUEUED, now_ms)
    return found is not None


_LIVE = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RETRYING, JobStatus.RUNNING}


def listing(connection: sqlite3.Connection, query: JobQuery, now_ms: int) -> JobPage:
    """Kept records by ``query``, newest update first (a scan: no index is kept on the
    update time, which every settlement would have to move), jobs known only by their
    message rows among them.

    A finished status is filtered in SQL; a live one (queued, scheduled, retrying,
    running) is read off each pending job's message, so those rows are read and filtered
    here, as ``get`` would report them.
    """
    kept = ["(expires_at_ms IS NULL OR expires_at_ms > ?)"]
    kept_parameters: list[Any] = [now_ms]
    pending = [_WITHOUT_ROW]
    pending_parameters: list[Any] = []
    since_ms = None if query.since is None else int(query.since * 1000)
    filters = (
        ("task = ?", "m.job_task = ?", query.task),
        ("queue = ?", "q.name = ?", query.queue),
        ("updated_at_ms >= ?", "m.enqueued_at_ms >= ?", since_ms),
    )
    for kept_condition, pending_condition, value in filters:
        if value is not None:
            kept.append(kept_condition)
            pending.append(pending_condition)
            kept_parameters.append(value)
            pending_parameters.append(value)
    live = query.status in _LIVE
    if query.status is not None:
        statuses = [s.value for s in _PENDING] if live else [query.status.value]
        kept.append(f"status IN ({', '.join('?' * len(statuses))})")
        kept_parameters += statuses
    union = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {' AND '.join(kept)}"
    parameters = kept_parameters
    if query.status is None or live:
        union += f" UNION ALL {_PENDING_SELECT} WHERE {' AND '.join(pending)}"
        parameters = kept_parameters + pending_parameters
    select = f"{union} ORDER BY 7 DESC, 1 DESC"
    if live:
        rows = connection.execute(select, parameters).fetchall()
        return query.page([_record(connection, row, now_ms) for row in rows])
    (total,) = connection.execute(f"SELECT count(*) FROM ({union})", parameters).fetchone()
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
    """Record each job's outcome, then ack, requeue or dead-letter its delivery; returns
    the settlements whose leases lapsed (their jobs' records left as they were)."""
    _record_settled(connection, settlements, now_ms)
    lost: list[Settlement] = []
    acking = [s for s in settlements if s.status in _ACKED]
    lapsed_tags = set(
        queues.ack(connection, topology, [s.delivery for s in acking], now_ms, changes)
    )
    if not lapsed_tags and len(acking) == len(settlements):
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
        if not settled:
            lost.append(settlement)
    return lost


def _record_settled(
    connection: sqlite3.Connection, settlements: Sequence[Settlement], now_ms: int
) -> None:
    """Write the outcome of each settled job whose lease still holds into its record,
    creating the record from its message row if the job has none yet.

    Runs before the messages are acked or moved, while their rows still hold the job's
    task and lease. Jobs that ended alike under one lease share one statement over a JSON
    list of their rowids: binding parameters per job costs more than SQLite's work.
    """
    outcomes: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for settlement in settlements:
        outcomes[(*_outcome(settlement), settlement.delivery.receipt)].append(
            settlement.delivery.tag
        )
    for (status, attempt, result, error, started_ms, finished, receipt), tags in outcomes.items():
        connection.execute(
            _UPSERT_OUTCOME,
            {
                "status": status,
                "attempts": attempt,
                "result": result,
                "error": error,
                "started": started_ms,
                "now": now_ms,
                "finished": finished,
                "receipt": receipt,
                "tags": json.dumps(tags),
            },
        )


# A job that has a row keeps its task, queue, creation time and first attempt; one known
# only by its message row (or a pre-v6 row without job columns) gets a row here.
_UPSERT_OUTCOME = """
INSERT INTO jobs (id, task, queue, status, attempts, result, error, first_attempt_at_ms,
    last_attempt_at_ms, created_at_ms, updated_at_ms, message_rowid, result_ttl_ms,
    expires_at_ms)
SELECT m.message_id, coalesce(m.job_task, ''), q.name, :status, :attempts, :result, :error,
    :started, :started, m.enqueued_at_ms, :now, m.id, coalesce(m.job_result_ttl_ms, 0),
    CASE WHEN :finished THEN :now + m.job_result_ttl_ms END
FROM messages AS m JOIN queues AS q ON q.id = m.queue_id
WHERE m.id IN (SELECT value FROM json_each(:tags)) AND m.lease_token = :receipt
    AND m.available_at_ms > :now
    AND (m.job_task IS NOT NULL OR EXISTS (SELECT 1 FROM jobs WHERE jobs.id = m.message_id))
ON CONFLICT (id) DO UPDATE SET status = excluded.status, attempts = excluded.attempts,
    result = excluded.result, error = excluded.error,
    first_attempt_at_ms = coalesce(first_attempt_at_ms, excluded.first_attempt_at_ms),
    last_attempt_at_ms = excluded.last_attempt_at_ms, updated_at_ms = excluded.updated_at_ms,
    expires_at_ms = CASE WHEN :finished THEN :now + result_ttl_ms END
"""


def _outcome(settlement: Settlement) -> tuple[Any, ...]:
    """(status, attempt, result, error, started ms, finished) of a settlement, as stored."""
    status, result, error = settlement.status, settlement.result, settlement.error
    return (
        status.value,
        settlement.delivery.delivery_count,
        None if result is None else _dumps(result),
        None if error is None else _dumps(error),
        int(settlement.started_at * 1000),
        status.finished,
    )


def record_outcomes(
    connection: sqlite3.Connection, settled: Sequence[Settlement], now_ms: int
) -> None:
    """Update the records of jobs another broker carries, one statement per distinct outcome.

    Jobs that ended alike (same status, attempt, result, error and start millisecond) share
    one UPDATE over a JSON list of their ids: binding ten parameters per job costs more
    than SQLite's work on the row.
    """
    outcomes: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for settlement in settled:
        outcomes[_outcome(settlement)].append(settlement.delivery.message.id)
    for (status, attempt, result, error, started_ms, finished), job_ids in outcomes.items():
        connection.execute(
            "UPDATE jobs SET status = ?, attempts = ?, result = ?, error = ?,"
            " first_attempt_at_ms = coalesce(first_attempt_at_ms, ?), last_attempt_at_ms = ?,"
            " updated_at_ms = ?, expires_at_ms = CASE WHEN ? THEN ? + result_ttl_ms END"
            " WHERE id IN (SELECT value FROM json_each(?))",
            (status, attempt, result, error, started_ms, started_ms, now_ms, finished, now_ms,
             json.dumps(job_ids)),
        )  # fmt: skip


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
    update = "UPDATE jobs SET progress = ?, updated_at_ms = ? WHERE id = ?"
    parameters = (_dumps(progress), now_ms, job_id)
    if connection.execute(update, parameters).rowcount == 0:
        if not _materialize(connection, job_id, now_ms):
            raise JobNotFound(job_id)
        connection.execute(update, parameters)


def cancel(connection: sqlite3.Connection, topology: Topology, job_id: str, now_ms: int) -> bool:
    select = "SELECT status, message_rowid FROM jobs WHERE id = ?"
    row = connection.execute(select, (job_id,)).fetchone()
    if row is None and _materialize(connection, job_id, now_ms):
        row = connection.execute(select, (job_id,)).fetchone()
    if row is None:
        raise JobNotFound(job_id)
    if JobStatus(row[0]) not in _PENDING:
        return False
    if row[1] is not None and not browse.remove_waiting(connection, topology, row[1], now_ms):
        return False  # started meanwhile: a row made above is rolled back with the cancel
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
