"""Workers as their heartbeats report them; jobs, listed or looked up by id."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.brokers.capabilities import Capability
from conveyor.brokers.types import JobQuery, JobRecord, JobStatus
from conveyor.errors import JobNotFound
from conveyor.server.console.html import (
    Html,
    as_json,
    badge,
    facts,
    fmt,
    join,
    link,
    moment,
    pager,
    pre,
    table,
    url,
)
from conveyor.server.console.web import Console, Page, console_of

router = APIRouter()

MAX_JOB_ID = 200

STATUS_KINDS = {
    JobStatus.SUCCEEDED: "ok",
    JobStatus.RUNNING: "info",
    JobStatus.QUEUED: "info",
    JobStatus.SCHEDULED: "quiet",
    JobStatus.RETRYING: "warn",
    JobStatus.CANCELLED: "quiet",
    JobStatus.FAILED: "bad",
    JobStatus.DEAD: "bad",
}


@router.get("/workers")
async def workers(request: Request) -> Response:
    console = console_of(request)
    return await console.page(request, lambda session: workers_page(console))


@router.get("/jobs")
async def jobs(request: Request) -> Response:
    console = console_of(request)
    params = request.query_params
    job_id = params.get("id", "").strip()[:MAX_JOB_ID]
    status = JobStatus(params["status"]) if params.get("status") in _STATUSES else None
    task = params.get("task", "").strip()[:MAX_JOB_ID] or None
    offset = int(params["offset"]) if params.get("offset", "").isdigit() else 0
    query = JobQuery(status=status, task=task, limit=JOBS_PAGE, offset=offset)
    return await console.page(request, lambda session: job_page(console, job_id, query))


JOBS_PAGE = 50
_STATUSES = {status.value for status in JobStatus}


async def workers_page(console: Console) -> Page:
    page = Page("Workers", "workers")
    broker = await console.state.broker()
    if Capability.RESULTS not in broker.capabilities:
        page.add("workers", "Workers", fmt("<p>{}</p>", "This broker keeps no worker registry."))
        return page
    now, after = time.time(), console.settings.worker_lost_after
    rows = [
        [
            fmt("<code>{}</code>", worker.id),
            worker.host,
            worker.pid,
            join((link(url("/queues", queue), queue) for queue in worker.queues), ", "),
            f"{worker.running} of {worker.concurrency}",
            worker.processed,
            worker.failed,
            moment(worker.started_at),
            moment(worker.heartbeat_at),
            badge("lost", "bad") if worker.lost(now, after=after) else badge("alive", "ok"),
        ]
        for worker in await console.app.aworkers()
    ]
    headers = ["Worker", "Host", "Pid", "Queues", "Running", "Processed", "Failed", "Started"]
    headers += ["Last heartbeat", ""]
    body = table(headers, rows, empty="No worker has reported in.")
    note = fmt(
        '<p class="sub">{}</p>',
        f"A worker is lost after {after:g} s without a heartbeat; its jobs come back by "
        "themselves when their leases lapse.",
    )
    page.add("workers", "Workers", join([body, note]))
    return page


async def job_page(console: Console, job_id: str, query: JobQuery) -> Page:
    page = Page("Jobs", "jobs")
    form = fmt(
        '<form method="get" action="/jobs" class="inline">'
        '<label for="job-id">Job id</label>'
        '<input id="job-id" name="id" value="{}" size="40" required autocomplete="off">'
        '<button type="submit">Look up</button></form>',
        job_id,
    )
    page.add("lookup", "Find a job", form, live=False)
    if job_id:
        page.add("job", f"Job {job_id}", await job_panel(console, job_id))
    page.add("filter", "Filter jobs", filter_form(query), live=False)
    page.add("jobs", "Recent jobs", await jobs_panel(console, query))
    return page


def filter_form(query: JobQuery) -> Html:
    chosen = query.status.value if query.status else ""
    options = join(
        fmt(
            '<option value="{}"{}>{}</option>', value, " selected" if value == chosen else "", label
        )
        for value, label in [("", "any status"), *((s.value, s.value) for s in JobStatus)]
    )
    form = fmt(
        '<form method="get" action="/jobs" class="inline">'
        '<label for="job-status">Status</label><select id="job-status" name="status">{}</select>'
        '<label for="job-task">Task</label>'
        '<input id="job-task" name="task" value="{}" size="30" autocomplete="off">'
        '<button type="submit">Filter</button></form>',
        options,
        query.task or "",
    )
    return form


async def jobs_panel(console: Console, query: JobQuery) -> Html:
    """Kept jobs, newest update first, filtered by status and task (Flower's task list)."""
    found = await console.app.ajobs(query)
    rows = [
        [
            link(url("/jobs", id=record.id), record.id),
            record.task,
            link(url("/queues", record.queue), record.queue),
            badge(record.status.value, STATUS_KINDS.get(record.status, "quiet")),
            record.attempts,
            moment(record.updated_at),
            (record.error or {}).get("message") or "—",
        ]
        for record in found.items
    ]
    headers = ["Job", "Task", "Queue", "Status", "Attempts", "Updated", "Error"]
    listing = table(headers, rows, empty="No kept job matches.")
    filters = {"status": query.status.value if query.status else None, "task": query.task}
    paging = pager("/jobs", query.offset, query.limit, found.total, filters)
    return join([paging, listing, paging])


async def job_panel(console: Console, job_id: str) -> Html:
    try:
        record = (await console.app.ajob(job_id)).record
    except JobNotFound:
        return fmt(
            '<p class="notice error">{}</p>',
            f"No job with id {job_id!r}: it never existed, or its record expired.",
        )
    return job_facts(record)


def job_facts(record: JobRecord) -> Html:
    error = record.error or {}
    details = facts(
        [
            ("Status", badge(record.status.value, STATUS_KINDS.get(record.status, "quiet"))),
            ("Task", record.task),
            ("Queue", link(url("/queues", record.queue), record.queue)),
            ("Attempts", record.attempts),
            ("Created", moment(record.created_at)),
            ("Updated", moment(record.updated_at)),
            ("Scheduled for", moment(record.scheduled_for)),
            ("First attempt", moment(record.first_attempt_at)),
            ("Last attempt", moment(record.last_attempt_at)),
            ("Idempotency key", record.idempotency_key or "—"),
            ("Progress", "—" if record.progress is None else pre(as_json(record.progress))),
            ("Result", "—" if record.result is None else pre(as_json(record.result))),
        ]
    )
    if not error:
        return details
    failure = facts(
        [
            ("Error type", error.get("type") or error.get("error_type") or "—"),
            ("Message", error.get("message") or error.get("error_message") or "—"),
        ]
    )
    traceback = error.get("traceback")
    shown = pre(traceback, "traceback") if traceback else pre(as_json(dict(error)))
    return fmt("{}<h3>Error</h3>{}{}", details, failure, shown)
