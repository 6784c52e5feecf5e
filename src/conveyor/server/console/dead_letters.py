"""The dead-letter inspector: task queues' dead letters (``<queue>.dlq``) listed, inspected,
replayed (to their queue or another one) and purged, through CSRF-checked forms; and the
dead-letter topics of stream subscribers, each with its newest records."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.brokers.capabilities import Capability
from conveyor.errors import ConfigError, QueueNotFound, TopicNotFound
from conveyor.events.dead_letters import (
    DeadLetterTopic,
    StreamDeadLetter,
    is_dead_letter_topic,
    read_dead_letter_topic,
)
from conveyor.names import check_name
from conveyor.server.console.html import (
    Html,
    as_json,
    facts,
    fmt,
    join,
    link,
    moment,
    pager,
    pre,
    shorten,
    table,
    url,
)
from conveyor.server.console.sessions import Session
from conveyor.server.console.web import (
    Console,
    NotFound,
    Page,
    button,
    console_of,
    int_param,
    post_form,
    see_other,
    text_field,
)
from conveyor.tasks.dead_letters import DeadLetter, list_dead_letters
from conveyor.tasks.states import dead_letter_queue

router = APIRouter(prefix="/dead-letters")

PAGE_SIZE = 25
SCAN_PAGE = 500
NEWEST = 10
"""Records shown of each dead-letter topic."""


@router.get("")
async def index(request: Request) -> Response:
    console = console_of(request)
    return await console.page(request, lambda session: index_page(console))


@router.get("/{queue}")
async def queue_dead_letters(request: Request, queue: str) -> Response:
    console = console_of(request)
    offset = int_param(request, "offset", 0)
    return await console.page(request, lambda session: list_page(console, session, queue, offset))


@router.get("/{queue}/{job_id}")
async def inspect(request: Request, queue: str, job_id: str) -> Response:
    console = console_of(request)
    return await console.page(request, lambda session: detail_page(console, session, queue, job_id))


@router.post("/{queue}/replay")
async def replay(request: Request, queue: str) -> Response:
    console = console_of(request)
    session, fields = await console.form(request)
    await console.state.queue_spec(dead_letter_queue(queue))
    back = url("/dead-letters", queue)
    job_ids = [value for value in fields.get("job_id", []) if value.strip()]
    if not job_ids and text_field(fields, "scope") != "all":
        session.notify("Choose the dead letters to replay.", "error")
        return see_other(back)
    to_queue = text_field(fields, "to_queue")
    if to_queue is not None:
        try:
            await console.state.queue_spec(check_name("queue", to_queue))
        except (ConfigError, QueueNotFound) as error:
            session.notify(f"Nothing replayed: {error}", "error")
            return see_other(back)
    replayed = await console.app.areplay_dead_letters(
        queue, job_ids=job_ids or None, to_queue=to_queue
    )
    console.state.cache.clear()
    target = to_queue or queue
    if job_ids and replayed < len(job_ids):
        missing = len(job_ids) - replayed
        session.notify(
            f"Replayed {replayed} to queue {target!r}; {missing} no longer waited there "
            "(replayed or purged meanwhile, or held by a worker).",
            "error",
        )
    else:
        session.notify(f"Replayed {replayed} dead letter(s) to queue {target!r}.")
    return see_other(back)


@router.post("/{queue}/purge")
async def purge(request: Request, queue: str) -> Response:
    console = console_of(request)
    session, _ = await console.form(request)
    await console.state.queue_spec(dead_letter_queue(queue))
    purged = await console.app.apurge_dead_letters(queue)
    console.state.cache.clear()
    session.notify(f"Purged {purged} dead letter(s) of queue {queue!r}.")
    return see_other(url("/dead-letters", queue))


async def index_page(console: Console) -> Page:
    views = await console.state.queue_views()
    depths = {view.spec.name: view.stats.depth for view in views}
    rows = [
        [link(url("/dead-letters", view.spec.name), view.spec.name), dead, depths[dead]]
        for view in views
        if not view.is_dead_letter_queue and (dead := dead_letter_queue(view.spec.name)) in depths
    ]
    page = Page("Dead letters", "dead-letters")
    body = table(["Queue", "Dead-letter queue", "Dead letters"], rows, empty="No task queues yet.")
    page.add("queues", "Task queues", body)
    if Capability.STREAMS in (await console.state.broker()).capabilities:
        topics = await dead_letter_topics(console)
        page.add("topics", "Stream dead-letter topics", topic_panel(topics))
    return page


async def dead_letter_topics(console: Console) -> list[DeadLetterTopic]:
    """Topics named ``<topic>.dlq``, and those the App's subscribers dead-letter to under
    another name."""
    broker = await console.state.broker()
    chosen = {s.options.dead_letter_topic for s in console.app.subscribers.values()}
    found = []
    for spec in await broker.list_topics():
        if is_dead_letter_topic(spec.name) or spec.name in chosen:
            with contextlib.suppress(TopicNotFound):  # deleted meanwhile
                found.append(await read_dead_letter_topic(broker, spec.name, limit=NEWEST))
    return found


def topic_panel(topics: list[DeadLetterTopic]) -> Html:
    summary = table(
        ["Dead-letter topic", "Records", "Newest failure"],
        [
            [
                fmt('<a href="#dlq-topic-{}">{}</a>', topic.name, topic.name),
                topic.records,
                moment(topic.newest[0].when) if topic.newest else "—",
            ]
            for topic in topics
        ],
        empty="No dead-letter topics: no subscriber has given up on a record.",
    )
    return join([summary, *(topic_section(topic) for topic in topics)])


def topic_section(topic: DeadLetterTopic) -> Html:
    rows = [
        [
            moment(dead.when),
            dead.subscriber or "—",
            dead.group or "—",
            origin(dead),
            "—" if dead.attempts is None else dead.attempts,
            dead.error_type or "—",
            shorten(dead.error_message, 160) or "—",
            record_details(dead),
        ]
        for dead in topic.newest
    ]
    headers = ["Failed", "Subscriber", "Group", "From", "Attempts", "Error", "Message", "Record"]
    shown = f"The newest {len(topic.newest)} of {topic.records}, newest first."
    return fmt(
        '<h3 id="dlq-topic-{}">{}</h3><p class="sub">{}</p>{}',
        topic.name,
        topic.name,
        shown,
        table(headers, rows, empty="Empty: retention removed its records."),
    )


def origin(dead: StreamDeadLetter) -> str:
    if dead.original_topic is None:
        return "—"
    where = dead.original_topic
    if dead.original_partition is not None:
        where += f"[{dead.original_partition}]"
    if dead.original_offset is not None:
        where += f" @ {dead.original_offset}"
    return where


def record_details(dead: StreamDeadLetter) -> Html:
    record = dead.record
    key = record.key.decode("utf-8", "backslashreplace") if record.key is not None else None
    value = "" if record.value is None else record.value.decode("utf-8", "backslashreplace")
    return fmt(
        '<details class="body" data-key="{}"><summary>{}</summary>{}{}{}</details>',
        f"{record.topic}:{record.partition}:{record.offset}",
        shorten(" ".join(value.split()), 80) or "(no value)",
        pre(f"key: {key}" if key is not None else "no key"),
        pre(as_json(dict(dead.original_headers)), "headers"),
        pre(dead.traceback or "no traceback recorded", "traceback"),
    )


async def list_page(console: Console, session: Session, queue: str, offset: int) -> Page:
    dead_queue = dead_letter_queue(queue)
    await console.state.queue_spec(dead_queue)
    broker = await console.state.broker()
    found = await list_dead_letters(broker, dead_queue, limit=PAGE_SIZE, offset=offset)
    total = max((await console.state.queue_stats(dead_queue)).at_least, offset + len(found))
    page = Page(f"Dead letters of {queue}", "dead-letters")
    page.add("actions", "Replay or purge all", bulk_forms(session, queue, total), live=False)
    rows = [
        [
            link(url("/dead-letters", queue, dead.job_id), dead.job_id),
            dead.task or "—",
            dead.reason,
            dead.error_type or "—",
            shorten(dead.error_message, 160) or "—",
            "—" if dead.attempts is None else dead.attempts,
            moment(dead.failed_at),
            replay_one(session, queue, dead.job_id),
        ]
        for dead in found
    ]
    headers = ["Job", "Task", "Reason", "Error", "Message", "Attempts", "Failed", ""]
    listing = table(headers, rows, empty="No dead letters: every job has succeeded or is alive.")
    paging = pager(url("/dead-letters", queue), offset, PAGE_SIZE, total)
    count = fmt('<p class="sub">{} waiting in {}.</p>', total, dead_queue)
    page.add("dead-letters", "Dead letters", join([count, paging, listing, paging]))
    return page


def replay_one(session: Session, queue: str, job_id: str) -> Html:
    fields = fmt('<input type="hidden" name="job_id" value="{}">', job_id)
    return post_form(
        url("/dead-letters", queue, "replay"),
        session,
        join([fields, button("Replay", "small")]),
        css="inline",
    )


def to_queue_input(id: str) -> Html:
    return fmt(
        '<label for="{}">to queue</label><input id="{}" name="to_queue" size="24" '
        'placeholder="its own queue" autocomplete="off" pattern="[A-Za-z0-9_.:\\-]+">',
        id,
        id,
    )


def bulk_forms(session: Session, queue: str, total: int) -> Html:
    replay_all = post_form(
        url("/dead-letters", queue, "replay"),
        session,
        join(
            [
                Html('<input type="hidden" name="scope" value="all">'),
                to_queue_input("replay-all-to"),
                button("Replay all"),
            ]
        ),
        css="inline",
    )
    purge_all = post_form(
        url("/dead-letters", queue, "purge"),
        session,
        button("Purge all", "danger"),
        css="inline",
        confirm=f"Delete every dead letter of queue {queue}? This cannot be undone.",
    )
    note = fmt(
        '<p class="sub">{}</p>',
        "Replayed jobs are queued again as new deliveries; purged ones are gone for good.",
    )
    return join([replay_all, purge_all, note]) if total else note


async def find(console: Console, queue: str, job_id: str) -> DeadLetter:
    dead_queue = dead_letter_queue(queue)
    await console.state.queue_spec(dead_queue)
    broker = await console.state.broker()
    offset = 0
    while found := await list_dead_letters(broker, dead_queue, limit=SCAN_PAGE, offset=offset):
        for dead in found:
            if dead.job_id == job_id:
                return dead
        offset += len(found)
    raise NotFound(f"No dead letter of job {job_id!r} in queue {dead_queue!r}.")


async def detail_page(console: Console, session: Session, queue: str, job_id: str) -> Page:
    dead = await find(console, queue, job_id)
    page = Page(f"Dead letter {job_id}", "dead-letters")
    message = dead.queued.message
    summary = facts(
        [
            ("Job", fmt("<code>{}</code>", dead.job_id)),
            ("Task", dead.task or "—"),
            ("Original queue", link(url("/queues", dead.queue), dead.queue) if dead.queue else "—"),
            ("Reason", dead.reason),
            ("Error type", dead.error_type or "—"),
            ("Error message", pre(dead.error_message or "—", "message")),
            ("Attempts", "—" if dead.attempts is None else dead.attempts),
            ("Worker", dead.worker or "—"),
            ("First attempt", moment(dead.first_attempt_at)),
            ("Last attempt", moment(dead.last_attempt_at)),
            ("Failed", moment(dead.failed_at)),
            ("Arguments", pre(as_json(dead.arguments))),
        ]
    )
    page.add("dead-letter", "Failure", summary, live=False)
    traceback = pre(dead.traceback or "none recorded", "traceback")
    page.add("traceback", "Traceback", traceback, live=False)
    replay_form = post_form(
        url("/dead-letters", queue, "replay"),
        session,
        join(
            [
                fmt('<input type="hidden" name="job_id" value="{}">', job_id),
                to_queue_input("replay-to"),
                button("Replay"),
            ]
        ),
        css="inline",
    )
    back = link(url("/dead-letters", queue), f"← all dead letters of {queue}")
    page.add("replay", "Replay", join([replay_form, fmt("<p>{}</p>", back)]), live=False)
    page.add("headers", "Headers", pre(as_json(dict(message.headers)), "headers"), live=False)
    return page
