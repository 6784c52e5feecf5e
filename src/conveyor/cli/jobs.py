"""``conveyor jobs show|cancel JOB_ID`` and ``conveyor workers``."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from conveyor.cli.common import Context, add_command, add_group
from conveyor.cli.output import Column, ago, fields, number, print_json, show, text, when
from conveyor.errors import JobError


def add_parser(commands: Any) -> None:
    jobs = add_group(commands, "jobs", "inspect and cancel jobs")
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


def _json_text(value: Any) -> str:
    return "-" if value is None else json.dumps(value, indent=2)


async def show_job(ctx: Context) -> int:
    record = await (await ctx.results()).get_job(ctx.arguments.job_id)
    if ctx.json:
        print_json(dataclasses.asdict(record))
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
    now = time.time()
    rows = [
        {
            "id": w.id,
            "host": w.host,
            "pid": w.pid,
            "queues": list(w.queues),
            "concurrency": w.concurrency,
            "running": w.running,
            "processed": w.processed,
            "failed": w.failed,
            "started_at": w.started_at,
            "heartbeat_at": w.heartbeat_at,
            "lost": w.lost(now, after=ctx.arguments.lost_after),
        }
        for w in await (await ctx.results()).list_workers()
    ]
    show(
        ctx.json,
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
