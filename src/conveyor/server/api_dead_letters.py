"""Dead letters of a task queue (``<queue>.dlq``): list, inspect, replay, purge."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from conveyor.server.errors import ApiError
from conveyor.server.schemas import PageQuery, ReplayRequest
from conveyor.server.state import ServerState, get_state
from conveyor.shapes import dead_letter_json
from conveyor.tasks.dead_letters import list_dead_letters
from conveyor.tasks.states import dead_letter_queue

router = APIRouter(prefix="/queues/{queue}/dead-letters", tags=["dead letters"])
State = Annotated[ServerState, Depends(get_state)]

SCAN_PAGE = 500


@router.get("", summary="List a task queue's dead letters, oldest first")
async def list_queue_dead_letters(queue: str, state: State, paging: PageQuery) -> dict[str, Any]:
    """Without their tracebacks (inspect one for that); nothing is removed."""
    dead_queue = dead_letter_queue(queue)
    total = (await state.queue_stats(dead_queue)).at_least
    broker = await state.broker()
    found = await list_dead_letters(broker, dead_queue, limit=paging.limit, offset=paging.offset)
    return paging.page([dead_letter_json(dead) for dead in found], total)


@router.get("/{job_id}", summary="One dead letter with its traceback and message")
async def inspect_dead_letter(queue: str, job_id: str, state: State) -> dict[str, Any]:
    dead_queue = dead_letter_queue(queue)
    await state.queue_spec(dead_queue)
    broker = await state.broker()
    offset = 0
    while page := await list_dead_letters(broker, dead_queue, limit=SCAN_PAGE, offset=offset):
        for dead in page:
            if dead.job_id == job_id:
                return dead_letter_json(dead, detail=True)
        offset += len(page)
    raise ApiError(
        404, "DeadLetterNotFound", f"no dead letter of job {job_id!r} in queue {dead_queue!r}"
    )


@router.post("/replay", summary="Send dead jobs back to be run again")
async def replay_dead_letters(queue: str, request: ReplayRequest, state: State) -> dict[str, Any]:
    """All of them, or ``job_ids``; to their queue, or to ``to_queue``. Their jobs become
    queued again. ``replayed`` counts those moved (ids not found are skipped)."""
    await state.queue_spec(dead_letter_queue(queue))
    replayed = await state.app.areplay_dead_letters(
        queue, job_ids=request.job_ids, to_queue=request.to_queue
    )
    state.cache.clear()
    return {"replayed": replayed, "queue": request.to_queue or queue}


@router.delete("", summary="Delete a task queue's dead letters")
async def purge_dead_letters(queue: str, state: State) -> dict[str, Any]:
    purged = await state.app.apurge_dead_letters(queue)
    state.cache.clear()
    return {"purged": purged}
