"""Periodic tasks: every worker runs the schedule, and each tick is enqueued once in all.

Workers compute the same tick times (cron minutes, or interval multiples of the epoch) and
enqueue with the idempotency key ``periodic:TASK:TICK``; the result store lets only the first
submission of a key through, so no leader election is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.tasks.host import ScheduleHost
    from conveyor.tasks.states import JobStates

TICK_KEY_WINDOW = 86400.0


async def run_schedules(app: ScheduleHost, states: JobStates, stopping: asyncio.Event) -> None:
    now = datetime.now(UTC)
    upcoming = [schedule.next_after(now) for _, schedule in app.schedules]
    while not stopping.is_set():
        due = min(upcoming)
        pause = (due - datetime.now(UTC)).total_seconds()
        if pause > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await stopping.wait()
            continue
        for index, (task, schedule) in enumerate(app.schedules):
            tick = upcoming[index]
            if tick > datetime.now(UTC):
                continue
            key = f"periodic:{task.name}:{tick.isoformat()}"
            submission = replace(
                task.submission(idempotency_key=key), idempotency_window=TICK_KEY_WINDOW
            )
            await app.ensure_queue(states.broker, submission.queue)
            await states.submit([submission])
            upcoming[index] = schedule.next_after(tick)
