"""``/health``: ok, degraded (a threshold of AlertThresholds crossed) or down (no broker).

200 for ok and degraded, 503 for down, so a load balancer takes out only a server that
cannot reach its broker, while ``reasons`` tell an operator what crossed which threshold.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from conveyor.brokers.types import JobStatus
from conveyor.errors import ConveyorError
from conveyor.server.settings import AlertThresholds
from conveyor.server.state import ServerState, get_state

router = APIRouter(tags=["operations"])
State = Annotated[ServerState, Depends(get_state)]

FAILED = (JobStatus.FAILED, JobStatus.DEAD)
COUNTED = (JobStatus.SUCCEEDED, *FAILED)  # cancelled jobs neither failed nor succeeded


async def check(state: ServerState) -> tuple[str, list[str]]:
    """The status and the reasons for it."""
    try:
        broker = await state.broker()
        await broker.ping()
    except ConveyorError as error:
        return "down", [f"the broker cannot be reached: {error}"]
    limits = state.settings.alerts
    try:
        reasons = await _queue_reasons(state, limits)
        reasons += await _error_rate_reasons(state, limits)
        reasons += [
            f"consumer group {group.name!r} lags {group.lag} records (> {limits.consumer_lag})"
            for group in await state.groups()
            if group.lag > limits.consumer_lag
        ]
    except ConveyorError as error:
        return "degraded", [f"the broker answered the health check with an error: {error}"]
    return ("degraded" if reasons else "ok"), reasons


async def _queue_reasons(state: ServerState, limits: AlertThresholds) -> list[str]:
    reasons = []
    for view in await state.queue_views():
        name, stats = view.spec.name, view.stats
        if view.is_dead_letter_queue:
            if stats.at_least > limits.dead_letters:
                reasons.append(
                    f"queue {name!r} holds {stats.at_least} dead letters (> {limits.dead_letters})"
                )
            continue
        if stats.ready > limits.queue_depth:
            reasons.append(
                f"queue {name!r} has {stats.ready} ready messages (> {limits.queue_depth})"
            )
        if stats.oldest_age is not None and stats.oldest_age > limits.oldest_age:
            reasons.append(
                f"queue {name!r}'s oldest ready message has waited {stats.oldest_age:.0f} s "
                f"(> {limits.oldest_age:g} s)"
            )
    return reasons


async def _error_rate_reasons(state: ServerState, limits: AlertThresholds) -> list[str]:
    """Failed or dead jobs among those that finished within the window."""
    failed = finished = 0
    for entry in await state.job_stats(window=limits.error_window):
        failed += sum(entry.statuses.get(status, 0) for status in FAILED)
        finished += sum(entry.statuses.get(status, 0) for status in COUNTED)
    if finished < max(limits.error_min_jobs, 1) or failed / finished <= limits.error_rate:
        return []
    return [
        f"{failed} of {finished} jobs finished in the last {limits.error_window:g} s failed "
        f"({failed / finished:.1%} > {limits.error_rate:.1%})"
    ]


@router.get(
    "/health",
    summary="ok, degraded or down, with the reasons",
    responses={503: {"description": "down: the broker cannot be reached"}},
)
async def health(state: State) -> JSONResponse:
    status, reasons = await check(state)
    body: dict[str, object] = {"status": status, "reasons": reasons}
    if status != "down":
        try:
            body["persistence"] = await (await state.broker()).persistence()
        except ConveyorError as error:
            body["persistence"] = f"unknown: {error}"
    return JSONResponse(body, 503 if status == "down" else 200)
