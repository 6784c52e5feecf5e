"""``conveyor jobs list``, ``conveyor jobs show|cancel JOB_ID`` and ``conveyor workers``.

``--json`` prints what the HTTP API answers (``GET /api/jobs``, ``/api/jobs/{id}``,
``/api/workers``), so a script can switch between them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from conveyor.brokers.types import JobQuery, JobStatus
from conveyor.cli.common import (
    Context,
    add_command,
    add_group,
    add_paging,
    argument_type,
    parse_datetime,
    parse_duration,
)
from conveyor.cli.output import Column, ago, fields, number, print_json, show, text, when
from conveyor.errors import ConfigError, JobError
from conveyor.shapes import MAX_PAGE, Paging


def add_parser(commands: Any) -> None:
    jobs = add_group(commands, "jobs", "list, inspect and cancel jobs")
    listing = add_command(jobs, "list", list_jobs, "jobs by status, task, queue and time")
    listing.add_argument("--status", type=_status, metavar="STATUS", help=", ".join(_STATUSES))
    listing.add_argument("--task", help="only this task's jobs")
    listing.add_argument("--queue", help="only jobs of this queue")
    listing.add_argument(
        "--since",
        type=argument_type(_since),
        metavar="WHEN",
        help="only jobs updated since: a duration ago (30m, 2h) or an ISO date-time",
    )
    add_paging(listing, 50)
    add_command(jobs, "show", show_job, "a job's status, attempts, result and error").add_argument(
        "job_id"
    )
    add_command(jobs, "cancel", cancel_job, "cancel a job that has not started").add_argument(
        "job_id"
    )
    workers = add_command(commands, "workers", list_workers, "workers and their last heartbeat")
    workers.add_argument(
        "--lost-after",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="silence after which a worker counts as lost (default 15)",
    )
    add_paging(workers, MAX_PAGE)


_STATUSES = tuple(status.value for status in JobStatus)


def _status(text: str) -> JobStatus:
    try:
        return JobStatus(text.lower())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a status; one of {', '.join(_STATUSES)}"
        ) from None


def _since(text: str) -> float:
    """``30m`` ago, or an ISO date-time."""
    try:
        return time.time() - parse_duration(text)
    except ConfigError:
        return parse_datetime(text)


async def list_jobs(ctx: Context) -> int:
    arguments = ctx.arguments
    query = JobQuery(
        arguments.status,
        arguments.task,
        arguments.queue,
        arguments.since,
        arguments.limit,
        arguments.offset,
    )
    found = await (await ctx.results()).list_jobs(query)
    rows = [record.to_json() for record in found.items]
    if ctx.json:
        print_json(Paging(query.limit, query.offset).page(rows, found.total))
        return 0
    now = time.time()
    for row, record in zip(rows, found.items, strict=True):
        error = record.error or {}
        row["error"] = f"{error.get('type', '')}: {error.get('message', '')}" if error else ""
    show(
        False,
        rows,
        [
            Column("job id", "id"),
            Column("task", "task"),
            Column("queue", "queue"),
            Column("status", "status"),
            number("attempts", "attempts"),
            Column("updated", "updated_at", lambda t: ago(t, now)),
            Column("error", "error"),
        ],
    )
    if found.total > query.offset + len(rows):
        print(
            f"{len(rows)} of {found.total} shown; --offset {query.offset + len(rows)} for more",
            file=sys.stderr,
        )
    return 0


def _json_text(value: Any) -> str:
    return "-" if value is None else json.dumps(value, indent=2)


async def show_job(ctx: Context) -> int:
    record = await (await ctx.results()).get_job(ctx.arguments.job_id)
    if ctx.json:
        print_json(record.to_json())
        return 0
    error = dict(record.error or {})
    failure = f"{error.get('type', '')}: {error.get('message', '')}" if error else "-"
    pairs = [
        ("job id", record.id),
        ("task", record.task),
        ("queue", record.queue),
        ("status", record.status.value),
        ("attempts", str(record.attempts)),
        ("created", when(record.created_at)),
        ("updated", when(record.updated_at)),
        ("scheduled for", when(record.scheduled_for)),
        ("first attempt", when(record.first_attempt_at)),
        ("last attempt", when(record.last_attempt_at)),
        ("progress", _json_text(record.progress)),
        ("result", _json_text(record.result)),
        ("error", failure),
        ("idempotency key", text(record.idempotency_key)),
    ]
    if error.get("traceback"):
        pairs.append(("traceback", str(error["traceback"]).rstrip()))
    print(fields(pairs))
    return 0


async def cancel_job(ctx: Context) -> int:
    job_id = ctx.arguments.job_id
    results = await ctx.results()
    cancelled = await results.cancel_job(job_id)
    status = (await results.get_job(job_id)).status
    if ctx.json:
        print_json({"job_id": job_id, "cancelled": cancelled, "status": status})
    elif not cancelled:
        raise JobError(f"job {job_id!r} is {status.value}: too late to cancel")
    else:
        print(f"cancelled job {job_id!r}")
    return 0 if cancelled else 1


async def list_workers(ctx: Context) -> int:
    now, arguments = time.time(), ctx.arguments
    workers = await (await ctx.results()).list_workers()
    paging = Paging(arguments.limit, arguments.offset)
    rows = [worker.to_json(now, arguments.lost_after) for worker in paging.slice(workers)]
    if ctx.json:
        print_json(paging.page(rows, len(workers)))
        return 0
    show(
        False,
        rows,
        [
            Column("id", "id"),
            Column("host", "host"),
            number("pid", "pid"),
            Column("queues", "queues"),
            number("concurrency", "concurrency"),
            number("running", "running"),
            number("processed", "processed"),
            number("failed", "failed"),
            Column("heartbeat", "heartbeat_at", lambda t: ago(t, now)),
            Column("lost", "lost"),
        ],
    )
    return 0
