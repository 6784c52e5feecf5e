"""A queue's page (figures, consumers, its last hour, the message browser), and the queue
table and charts the overview shows too."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.brokers.capabilities import Capability
from conveyor.brokers.types import QueuedMessage
from conveyor.errors import QueueNotFound
from conveyor.server.console.charts import Line, chart
from conveyor.server.console.history import EMPTY, QueueSeries
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
from conveyor.server.state import QueueView
from conveyor.shapes import show_body
from conveyor.tasks.states import dead_letter_queue

router = APIRouter()

PAGE_SIZE = 25
PREVIEW = 120


@router.get("/queues/{name}")
async def queue_detail(request: Request, name: str) -> Response:
    console = console_of(request)
    offset = int_param(request, "offset", 0)
    limit = int_param(request, "limit", PAGE_SIZE, low=1, high=500)
    return await console.page(request, lambda session: queue_page(console, name, offset, limit))


Consumers = dict[str, int] | None
"""Live workers per queue, None where nothing can say (see ServerState.consumers)."""

NO_HISTORY = (
    "Charts need a result store to keep their samples in: pass App(..., results_url=...) "
    "(a Redis or sqlite:/// URL)."
)


def starved(view: QueueView, consumers: Consumers) -> bool:
    """A task queue with messages ready and, as far as the registry knows, no consumer."""
    return (
        consumers is not None
        and not view.is_dead_letter_queue
        and view.stats.ready > 0
        and not consumers.get(view.spec.name)
    )


def consumers_cell(view: QueueView, consumers: Consumers) -> object:
    """The count ("—" where unknown), labelled in words when nothing takes a backlog."""
    if consumers is None:
        return "—"
    count = consumers.get(view.spec.name, 0)
    if starved(view, consumers):
        return fmt('<span class="no-consumer">{} {}</span>', count, badge("no consumer", "bad"))
    return count


def queue_table(
    views: list[QueueView],
    names: set[str],
    consumers: Consumers,
    series: dict[str, QueueSeries] | None,
) -> Html:
    rows = []
    for view in views:
        name, stats = view.spec.name, view.stats
        drawn = (series or {}).get(name, EMPTY)
        dead = dead_letter_queue(name)
        rows.append(
            [
                link(url("/queues", name), name),
                stats.ready,
                known(stats.delayed),
                known(stats.unacked),
                consumers_cell(view, consumers),
                age(stats.oldest_age).removesuffix(" ago"),
                rate(drawn.latest(drawn.published)),
                rate(drawn.latest(drawn.acked)),
                rate(drawn.latest(drawn.dead_lettered)),
                link(url("/dead-letters", name), dead) if dead in names else "—",
            ]
        )
    headers = ["Queue", "Ready", "Delayed", "Unacked", "Consumers", "Oldest", "Published"]
    headers += ["Acked", "Dead-lettered", "Dead letters"]
    return table(headers, rows, empty="No queues yet.")


def queue_charts(
    views: list[QueueView], series: dict[str, QueueSeries] | None, window: float
) -> Html:
    if series is None:
        return fmt("<p>{}</p>", NO_HISTORY)
    if not views:
        return fmt("<p>{}</p>", "No queues yet.")
    return join(
        fmt(
            '<div class="chart-row"><h3>{}</h3>{}</div>',
            link(url("/queues", view.spec.name), view.spec.name),
            charts(series.get(view.spec.name, EMPTY), window),
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


async def queue_page(console: Console, name: str, offset: int, limit: int) -> Page:
    state = console.state
    views = await state.queue_views([await state.queue_spec(name)])
    if not views:
        raise QueueNotFound(name)
    view = views[0]
    history = console.history
    await history.sample_if_due()
    series = await history.series([name])
    broker = await state.broker()
    page = Page(f"Queue {name}", "overview")
    page.add("figures", "Figures", queue_facts(view, await state.consumers()))
    if series is None:
        drawn = fmt("<p>{}</p>", NO_HISTORY)
    else:
        drawn = fmt('<div class="chart-grid">{}</div>', charts(series[name], history.window))
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


def queue_facts(view: QueueView, consumers: Consumers) -> Html:
    stats = view.stats
    dead = view.dead_letter_queue
    return facts(
        [
            ("Ready", stats.ready),
            ("Delayed", known(stats.delayed)),
            ("Unacked (leased)", known(stats.unacked)),
            ("Consumers (live workers)", consumers_cell(view, consumers)),
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
