"""Tasks, jobs and workers: enqueue a task by name, follow a job, see who is working."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from conveyor.brokers.types import JobQuery, JobStatus
from conveyor.server.errors import ApiError
from conveyor.server.schemas import EnqueueRequest, PageQuery
from conveyor.server.state import ServerState, get_state
from conveyor.tasks.task import Task

router = APIRouter(tags=["jobs"])
State = Annotated[ServerState, Depends(get_state)]


def task_json(task: Task[Any, Any], periodic: bool) -> dict[str, Any]:
    options = task.options
    rate = options.rate_limit
    return {
        "name": task.name,
        "queue": options.queue,
        "priority": options.priority,
        "max_retries": options.retry.max_retries,
        "timeout": options.timeout,
        "executor": options.executor.value,
        "rate_limit": None if rate is None else {"count": rate.count, "period": rate.period},
        "result_ttl": options.result_ttl,
        "periodic": periodic,
    }


@router.get("/tasks", summary="List the registered tasks")
async def list_tasks(state: State, paging: PageQuery) -> dict[str, Any]:
    app = state.app
    periodic = {task.name for task, _ in app.schedules}
    tasks = [app.tasks[name] for name in sorted(app.tasks)]
    items = [task_json(task, task.name in periodic) for task in paging.slice(tasks)]
    return paging.page(items, len(tasks))


@router.post("/jobs", status_code=202, summary="Enqueue a task by name")
async def enqueue(request: EnqueueRequest, state: State, response: Response) -> dict[str, Any]:
    """Arguments are validated against the task's signature and types, as in Python:
    a bad one is refused with 422 naming the field, and nothing is sent."""
    if request.task not in state.app.tasks:
        registered = sorted(state.app.tasks)
        raise ApiError(
            404,
            "TaskNotFound",
            f"no task named {request.task!r}; registered: {', '.join(registered) or 'none'}",
            registered=registered,
        )
    options = {
        name: value
        for name in ("delay", "priority", "queue", "idempotency_key")
        if (value := getattr(request, name)) is not None
    }
    job = await state.app.asend_task(request.task, request.args, request.kwargs, **options)
    state.cache.clear()
    response.headers["Location"] = f"/api/jobs/{job.id}"
    return job.record.to_json()


@router.get("/jobs", summary="Jobs by status, task, queue and time, newest update first")
async def list_jobs(
    state: State,
    paging: PageQuery,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
    task: Annotated[str | None, Query(description="Only this task's jobs.")] = None,
    queue: Annotated[str | None, Query(description="Only jobs of this queue.")] = None,
    since: Annotated[
        float | None, Query(ge=0, description="Only jobs updated since (epoch seconds).")
    ] = None,
) -> dict[str, Any]:
    query = JobQuery(status, task, queue, since, paging.limit, paging.offset)
    found = await state.app.ajobs(query)
    return paging.page([record.to_json() for record in found.items], found.total)


@router.get("/jobs/{job_id}", summary="A job's status, result, error and progress")
async def get_job(job_id: str, state: State) -> dict[str, Any]:
    return (await state.app.ajob(job_id)).record.to_json()


@router.post("/jobs/{job_id}/cancel", summary="Cancel a job that has not started")
async def cancel_job(job_id: str, state: State) -> dict[str, Any]:
    """``cancelled`` is false when the job is already running or finished."""
    job = await state.app.ajob(job_id)
    cancelled = await job.acancel()
    state.cache.clear()
    return {"cancelled": cancelled, "job": job.record.to_json()}


@router.get("/workers", summary="Workers that have reported in; lost ones stopped heartbeating")
async def list_workers(state: State, paging: PageQuery) -> dict[str, Any]:
    workers = await state.app.aworkers()
    now, after = time.time(), state.settings.worker_lost_after
    items = [worker.to_json(now, after) for worker in paging.slice(workers)]
    return paging.page(items, len(workers))
