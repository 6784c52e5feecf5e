"""What a worker tells its operator through logging (logger ``conveyor.worker``).

One line per retry (WARNING) and per job given up on (ERROR), with the job id, the task,
the attempt and the reason, also as record attributes (``job_id``, ``task``, ``attempt``,
``reason``) for structured formatters. A success is a DEBUG line only, so that the fast
path pays one level check per job when DEBUG is off.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from conveyor.brokers.types import Delivery
from conveyor.tasks.task import TASK_HEADER
from conveyor.worker.executors import describe

log = logging.getLogger("conveyor.worker")


class FailureReason(StrEnum):
    """Why a worker gave up on a job, kept in its error and its dead letter's record."""

    PERMANENT = "permanent_error"
    """The error is never retried (its type, PermanentError, or the job cannot run)."""
    EXHAUSTED = "retries_exhausted"
    """Every retry the task allows failed."""
    DELIVERY_LIMIT = "delivery_limit"
    """Delivered more often than the retries allow: earlier attempts died with a worker."""


def failure(error: BaseException, reason: FailureReason) -> dict[str, Any]:
    """The error of a job given up on, with why."""
    return {**describe(error), "reason": reason.value}


def succeeded(delivery: Delivery, seconds: float) -> None:
    log.debug(
        "job %s %s attempt %d succeeded in %.3f s",
        *_job(delivery),
        seconds,
        extra=_fields(delivery, "succeeded"),
    )


def retrying(delivery: Delivery, error: BaseException, detail: str) -> None:
    log.warning(
        "job %s %s attempt %d failed with %s: %s; %s",
        *_job(delivery),
        type(error).__name__,
        error,
        detail,
        extra=_fields(delivery, "retrying"),
    )


def gave_up(
    delivery: Delivery,
    error: BaseException,
    reason: FailureReason,
    detail: str,
    *,
    dead_letter: bool,
) -> None:
    log.error(
        "job %s %s attempt %d failed with %s: %s; %s (%s), %s",
        *_job(delivery),
        type(error).__name__,
        error,
        reason.value,
        detail,
        "dead-lettered" if dead_letter else "marked failed (dead_letter=False)",
        extra=_fields(delivery, reason.value),
    )


def summary(done: int, failed: int, seconds: float, running: int, waiting: int) -> None:
    log.info(
        "%d jobs in the last %g s (%.1f/s), %d of them failed or retrying; %d running, "
        "%d waiting in this worker",
        done,
        seconds,
        done / seconds,
        failed,
        running,
        waiting,
        extra={"processed": done, "failed": failed, "running": running, "waiting": waiting},
    )


def _job(delivery: Delivery) -> tuple[str, str, int]:
    message = delivery.message
    return message.id, str(message.headers.get(TASK_HEADER)), delivery.delivery_count


def _fields(delivery: Delivery, reason: str) -> dict[str, Any]:
    job_id, task, attempt = _job(delivery)
    return {"job_id": job_id, "task": task, "attempt": attempt, "reason": reason}
