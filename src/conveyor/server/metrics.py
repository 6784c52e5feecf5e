"""``/metrics``: the broker's figures in Prometheus' text exposition format (version 0.0.4).

Queue figures come from ``queue_stats``, job figures from the kept job records
(``Broker.job_stats``), lag from the consumer groups, workers from their heartbeats; all
through the server's short cache. A broker that cannot be reached gives
``conveyor_broker_up 0`` and nothing else, so the scrape itself still succeeds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from conveyor.brokers.types import JobStatus, TaskStats, WorkerInfo
from conveyor.errors import BrokerUnavailable
from conveyor.server.state import QueueView, ServerState, get_state

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

router = APIRouter(tags=["operations"])
State = Annotated[ServerState, Depends(get_state)]

Labels = Mapping[str, str]
Sample = tuple[Labels, float]


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


class Exposition:
    """Metric families in the text format: HELP and TYPE, then the samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        self.lines.append(f"# HELP {name} {escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.sample(name, labels, value)

    def sample(self, name: str, labels: Labels, value: float) -> None:
        inside = ",".join(f'{key}="{escape_label(text)}"' for key, text in labels.items())
        series = f"{name}{{{inside}}}" if inside else name
        self.lines.append(f"{series} {number(value)}")

    def histogram(self, name: str, help_text: str, stats: Iterable[TaskStats]) -> None:
        self.lines.append(f"# HELP {name} {escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} histogram")
        for entry in stats:
            task = {"task": entry.task}
            for bound, count in entry.duration_buckets:
                self.sample(f"{name}_bucket", {**task, "le": number(bound)}, count)
            self.sample(f"{name}_bucket", {**task, "le": "+Inf"}, entry.duration_count)
            self.sample(f"{name}_sum", task, entry.duration_sum)
            self.sample(f"{name}_count", task, entry.duration_count)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


QUEUE_FIGURES = (
    ("conveyor_queue_messages_ready", "gauge", "Messages ready to be received.", "ready"),
    ("conveyor_queue_messages_unacked", "gauge", "Messages leased, not yet settled.", "unacked"),
    ("conveyor_queue_messages_delayed", "gauge", "Messages waiting out a delay.", "delayed"),
    ("conveyor_queue_bytes", "gauge", "Bytes of the messages the queue holds.", "bytes"),
    ("conveyor_queue_published_total", "counter", "Messages stored in the queue.", "published"),
    ("conveyor_queue_delivered_total", "counter", "Leases taken on messages.", "delivered"),
    ("conveyor_queue_acked_total", "counter", "Messages acknowledged.", "acked"),
    ("conveyor_queue_dead_lettered_total", "counter", "Messages dead-lettered.", "dead_lettered"),
)


def queue_families(out: Exposition, views: list[QueueView]) -> None:
    for name, kind, help_text, field in QUEUE_FIGURES:
        samples = [  # a figure the backend cannot know is left out, never shown as 0
            ({"queue": v.spec.name}, float(value))
            for v in views
            if (value := getattr(v.stats, field)) is not None
        ]
        out.family(name, kind, help_text, samples)
    out.family(
        "conveyor_queue_oldest_message_age_seconds",
        "gauge",
        "Seconds the oldest ready message has waited (0 when none is ready).",
        [({"queue": v.spec.name}, v.stats.oldest_age or 0.0) for v in views],
    )
    depth = {v.spec.name: v.stats.at_least for v in views}
    out.family(
        "conveyor_queue_dead_letters",
        "gauge",
        "Messages in the queue's dead-letter queue.",
        [
            ({"queue": v.spec.name, "dead_letter_queue": target}, depth[target])
            for v in views
            if (target := v.dead_letter_queue) is not None and target in depth
        ],
    )


def job_families(out: Exposition, stats: list[TaskStats]) -> None:
    out.family(
        "conveyor_jobs",
        "gauge",
        "Job records kept (result_ttl), by task and status.",
        [
            ({"task": entry.task, "status": status.value}, entry.statuses.get(status, 0))
            for entry in stats
            for status in JobStatus
        ],
    )
    out.histogram(
        "conveyor_job_duration_seconds",
        "How long finished jobs (of those kept) ran their last attempt, by task.",
        stats,
    )


def worker_families(out: Exposition, workers: list[WorkerInfo], lost_after: float) -> None:
    now = time.time()
    alive = [w for w in workers if not w.lost(now, after=lost_after)]
    out.family("conveyor_workers_alive", "gauge", "Workers heartbeating.", [({}, len(alive))])
    out.family(
        "conveyor_workers_lost",
        "gauge",
        f"Workers silent for more than {lost_after:g} s.",
        [({}, len(workers) - len(alive))],
    )
    per_worker = (
        ("conveyor_worker_running_jobs", "gauge", "Jobs running on the worker.", "running"),
        ("conveyor_worker_processed_total", "counter", "Jobs the worker settled.", "processed"),
        ("conveyor_worker_failed_total", "counter", "Jobs that failed on the worker.", "failed"),
    )
    for name, kind, help_text, field in per_worker:
        samples = [({"worker": w.id}, float(getattr(w, field))) for w in alive]
        out.family(name, kind, help_text, samples)


async def collect(state: ServerState) -> str:
    out = Exposition()
    try:
        broker = await state.broker()
        await broker.ping()
    except BrokerUnavailable:
        out.family("conveyor_broker_up", "gauge", "Whether the broker answers.", [({}, 0)])
        return out.text()
    out.family("conveyor_broker_up", "gauge", "Whether the broker answers.", [({}, 1)])
    queue_families(out, await state.queue_views())
    job_families(out, await state.job_stats())
    out.family(
        "conveyor_consumer_lag",
        "gauge",
        "Records a consumer group has yet to read, per partition.",
        [
            ({"group": g.name, "topic": p.topic, "partition": str(p.partition)}, p.lag)
            for g in await state.groups()
            for p in g.partitions
        ],
    )
    if state.app.has_results(broker):
        workers = await (await state.app.aresults()).list_workers()
        worker_families(out, workers, state.settings.worker_lost_after)
    return out.text()


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus metrics",
    responses={200: {"content": {CONTENT_TYPE: {}}}},
)
async def metrics(state: State) -> PlainTextResponse:
    return PlainTextResponse(await collect(state), media_type=CONTENT_TYPE)
