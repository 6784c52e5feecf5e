"""The overview: what needs attention first (health, backlogs nobody consumes, lost
workers, lagging groups), then queues, workers, consumer groups, the last hour and dead
letters, as an operator of RabbitMQ's management UI or Flower looks for them."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.brokers.capabilities import Capability
from conveyor.brokers.stream_types import GroupInfo
from conveyor.brokers.types import WorkerInfo
from conveyor.names import DEAD_LETTER_SUFFIX
from conveyor.server import health
from conveyor.server.console.html import Html, age, badge, fmt, join, link, moment, table, url
from conveyor.server.console.queues import queue_charts, queue_table, starved
from conveyor.server.console.streams import state_badge
from conveyor.server.console.web import Console, Page, console_of
from conveyor.server.state import QueueView

router = APIRouter()


@router.get("/")
async def overview(request: Request) -> Response:
    console = console_of(request)
    return await console.page(request, lambda session: overview_page(console))


async def overview_page(console: Console) -> Page:
    state, history = console.state, console.history
    await history.sample_if_due()
    status, reasons = await health.check(state)
    views = await state.queue_views()
    names = {view.spec.name for view in views}
    work = [view for view in views if not view.is_dead_letter_queue]
    dead = [view for view in views if view.is_dead_letter_queue]
    consumers = await state.consumers()
    workers = await state.workers()
    series = await history.series([view.spec.name for view in work])
    now, after = time.time(), console.settings.worker_lost_after
    lost = [worker for worker in workers or [] if worker.lost(now, after=after)]
    backlogs = [view for view in work if starved(view, consumers)]
    page = Page("Overview", "overview")
    page.add("alerts", "Alerts", alerts(status, reasons, backlogs, lost, now))
    page.add("queues", "Queues", queue_table(work, names, consumers, series))
    page.add("workers", "Workers", worker_summary(workers, now, after))
    if Capability.CONSUMER_GROUPS in (await state.broker()).capabilities:
        limit = console.settings.alerts.consumer_lag
        page.add("groups", "Consumer groups", group_summary(await state.groups(), limit))
    page.add("charts", "The last hour", queue_charts(work, series, history.window))
    page.add("dead-letters", "Dead letters", dead_letter_summary(dead, names))
    return page


def alerts(
    status: str,
    reasons: list[str],
    backlogs: list[QueueView],
    lost: list[WorkerInfo],
    now: float,
) -> Html:
    """The reasons of /health (lagging groups among them), then what the console adds: a
    backlog no live worker takes from, and workers that stopped sending heartbeats."""
    kind = {"ok": "ok", "degraded": "warn"}.get(status, "bad")
    items = [fmt("<li>{}</li>", reason) for reason in reasons]
    items += [
        fmt(
            '<li class="no-consumer">{}</li>',
            f"queue {view.spec.name!r} has {view.stats.ready} ready messages and no "
            "consumer: no live worker takes from it",
        )
        for view in backlogs
    ]
    items += [
        fmt(
            '<li class="lost-worker">{}</li>',
            f"worker {worker.id!r} on {worker.host} is lost: its last heartbeat was "
            f"{age(now - worker.heartbeat_at)}",
        )
        for worker in lost
    ]
    listed = fmt('<ul class="alerts">{}</ul>', join(items)) if items else fmt("<p>No alerts.</p>")
    return fmt("<p>Health: {}</p>{}", badge(status, kind), listed)


def worker_summary(workers: list[WorkerInfo] | None, now: float, after: float) -> Html:
    if workers is None:
        return fmt("<p>{}</p>", "No worker registry: the App has no result store.")
    rows = [
        [
            fmt("<code>{}</code>", worker.id),
            worker.host,
            join((link(url("/queues", queue), queue) for queue in worker.queues), ", "),
            f"{worker.running} of {worker.concurrency}",
            moment(worker.heartbeat_at),
            badge("lost", "bad") if worker.lost(now, after=after) else badge("alive", "ok"),
        ]
        for worker in workers
    ]
    headers = ["Worker", "Host", "Queues", "Running", "Last heartbeat", ""]
    return table(headers, rows, empty="No worker has reported in.")


def group_summary(groups: list[GroupInfo], limit: int) -> Html:
    """Each group's total lag, labelled where it is over the alert threshold."""
    rows = [
        [
            fmt('<a href="/groups#group-{}">{}</a>', info.name, info.name),
            state_badge(info.state),
            len(info.members),
            ", ".join(sorted({p.topic for p in info.partitions})),
            lag_cell(info.lag, limit),
        ]
        for info in groups
    ]
    return table(["Group", "State", "Members", "Topics", "Lag"], rows, empty="No consumer groups.")


def lag_cell(lag: int, limit: int) -> object:
    if lag > limit:
        label = badge("over threshold", "warn")
        return fmt('<span class="over-threshold">{} {}</span>', lag, label)
    return lag


def dead_letter_summary(views: list[QueueView], names: set[str]) -> Html:
    rows = []
    for view in views:
        name = view.spec.name
        source = name.removesuffix(DEAD_LETTER_SUFFIX)
        if name.endswith(DEAD_LETTER_SUFFIX) and source in names:
            target = link(url("/dead-letters", source), "inspect")
        else:
            target = link(url("/queues", name), "browse")
        rows.append([name, view.stats.depth, target])
    return table(["Dead-letter queue", "Messages", ""], rows, empty="No dead-letter queues.")
