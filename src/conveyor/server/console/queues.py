"""The overview (alerts, queues with their last hour, dead letters) and a queue's page with
its message browser."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.brokers.capabilities import Capability
from conveyor.brokers.types import QueuedMessage
from conveyor.errors import QueueNotFound
from conveyor.names import DEAD_LETTER_SUFFIX
from conveyor.server import health
from conveyor.server.console.charts import Line, chart
from conveyor.server.console.history import QueueSeries
from conveyor.server.console.html import (
    Html,
    age,
    as_json,
    badge,
    facts,
    fmt,
    join,
    known,
    link,
    moment,
    options_text,
    pager,
    pre,
    rate,
    shorten,
    size,
    table,
    url,
)
from conveyor.server.console.web import Console, Page, console_of, int_param
from conveyor.server.schemas import show_body
from conveyor.server.state import QueueView
from conveyor.tasks.states import dead_letter_queue

router = APIRouter()

PAGE_SIZE = 25
PREVIEW = 120


@router.get("/")
async def overview(request: Request) -> Response:
    console = console_of(request)
    return await console.page(request, lambda session: overview_page(console))


@router.get("/queues/{name}")
async def queue_detail(request: Request, name: str) -> Response:
    console = console_of(request)
    offset = int_param(request, "offset", 0)
    limit = int_param(request, "limit", PAGE_SIZE, low=1, high=500)
    return await console.page(request, lambda session: queue_page(console, name, offset, limit))


async def overview_page(console: Console) -> Page:
    await console.history.sample_if_due()
    status, reasons = await health.check(console.state)
    views = await console.state.queue_views()
    names = {view.spec.name for view in views}
    work = [view for view in views if not view.is_dead_letter_queue]
    dead = [view for view in views if view.is_dead_letter_queue]
    page = Page("Overview", "overview")
    page.add("alerts", "Alerts", alerts(status, reasons))
    page.add("queues", "Queues", queue_table(console, work, names))
    page.add("charts", "The last hour", queue_charts(console, work))
    page.add("dead-letters", "Dead letters", dead_letter_summary(dead, names))
    return page


def alerts(status: str, reasons: list[str]) -> Html:
    kind = {"ok": "ok", "degraded": "warn"}.get(status, "bad")
    items = join(fmt("<li>{}</li>", reason) for reason in reasons)
    listed = fmt('<ul class="alerts">{}</ul>', items) if reasons else fmt("<p>{}</p>", "No alerts.")
    return fmt("<p>Health: {}</p>{}", badge(status, kind), listed)


def queue_table(console: Console, views: list[QueueView], names: set[str]) -> Html:
    rows = []
    for view in views:
        name, stats = view.spec.name, view.stats
        series = console.history.series(name)
        dead = dead_letter_queue(name)
        rows.append(
            [
                link(url("/queues", name), name),
                stats.ready,
                known(stats.delayed),
                known(stats.unacked),
                age(stats.oldest_age).removesuffix(" ago"),
                rate(series.latest(series.published)),
                rate(series.latest(series.acked)),
                rate(series.latest(series.dead_lettered)),
                link(url("/dead-letters", name), dead) if dead in names else "—",
            ]
        )
    headers = ["Queue", "Ready", "Delayed", "Unacked", "Oldest", "Published", "Acked"]
    headers += ["Dead-lettered", "Dead letters"]
    return table(headers, rows, empty="No queues yet.")


def queue_charts(console: Console, views: list[QueueView]) -> Html:
    if not views:
        return fmt("<p>{}</p>", "No queues yet.")
    window = console.history.window
    return join(
        fmt(
            '<div class="chart-row"><h3>{}</h3>{}</div>',
            link(url("/queues", view.spec.name), view.spec.name),
            charts(console.history.series(view.spec.name), window),
        )
        for view in views
    )


def charts(series: QueueSeries, window: float) -> Html:
    return join(
        [
            chart("Depth", [Line("messages", "depth", series.depth)], window=window, show=whole),
            chart(
                "Rate",
                [
                    Line("published", "published", series.published),
                    Line("acked", "acked", series.acked),
                ],
                window=window,
                show=rate,
            ),
            chart(
                "Errors",
                [Line("dead-lettered", "errors", series.dead_lettered)],
                window=window,
                show=rate,
            ),
        ]
    )


def whole(value: float) -> str:
    return f"{value:.0f}"


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


async def queue_page(console: Console, name: str, offset: int, limit: int) -> Page:
    state = console.state
    views = await state.queue_views([await state.queue_spec(name)])
    if not views:
        raise QueueNotFound(name)
    view = views[0]
    await console.history.sample_if_due()
    broker = await state.broker()
    page = Page(f"Queue {name}", "overview")
    page.add("figures", "Figures", queue_facts(view))
    history = console.history
    drawn = fmt('<div class="chart-grid">{}</div>', charts(history.series(name), history.window))
    page.add("charts", "The last hour", drawn)
    if Capability.BROWSE not in broker.capabilities:
        unbrowsable = (
            f"The {broker.scheme} broker cannot show a queue's messages without taking "
            f"them; conveyor consume {name} takes them."
        )
        page.add("messages", "Messages", fmt("<p>{}</p>", unbrowsable))
        return page
    messages = await broker.browse(name, limit=limit, offset=offset)
    total = max(view.stats.at_least, offset + len(messages))
    browser = message_table(messages, offset)
    paging = pager(url("/queues", name), offset, limit, total, {"limit": limit})
    page.add("messages", "Messages", join([paging, browser, paging]))
    return page


def queue_facts(view: QueueView) -> Html:
    stats = view.stats
    dead = view.dead_letter_queue
    return facts(
        [
            ("Ready", stats.ready),
            ("Delayed", known(stats.delayed)),
            ("Unacked (leased)", known(stats.unacked)),
            ("Bytes", "unknown" if stats.bytes is None else size(stats.bytes)),
            ("Oldest ready", age(stats.oldest_age).removesuffix(" ago")),
            ("Published", known(stats.published)),
            ("Delivered", known(stats.delivered)),
            ("Acked", known(stats.acked)),
            ("Dead-lettered", known(stats.dead_lettered)),
            ("Dead letters go to", link(url("/queues", dead), dead) if dead else "—"),
            ("Options", options_text(view.spec.options())),
        ]
    )


def message_table(messages: list[QueuedMessage], offset: int) -> Html:
    rows = []
    for number, queued in enumerate(messages, start=offset + 1):
        message = queued.message
        rows.append(
            [
                number,
                fmt("<code>{}</code>", message.id),
                message.routing_key,
                message.priority,
                queued.delivery_count,
                moment(queued.enqueued_at),
                moment(queued.available_at),
                badge("leased", "warn") if queued.leased else "",
                body_cell(queued),
            ]
        )
    headers = ["#", "Id", "Routing key", "Priority", "Deliveries", "Enqueued", "Available"]
    headers += ["", "Body and headers"]
    return table(headers, rows, empty="The queue is empty.")


def body_cell(queued: QueuedMessage) -> Html:
    message = queued.message
    shown = show_body(bytes(message.body), message.content_type)
    body = shown["body"]
    text = as_json(body) if shown["body_encoding"] == "json" else str(body)
    if shown["body_encoding"] == "base64":
        text = f"base64: {text}"
    preview = " ".join(text.split())
    return fmt(
        '<details class="body" data-key="{}"><summary>{}</summary>{}{}</details>',
        message.id,
        shorten(preview, PREVIEW),
        pre(text),
        pre(as_json(dict(message.headers)), "headers") if message.headers else Html(""),
    )
