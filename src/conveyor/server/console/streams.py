"""Topics with their partitions' offsets, and consumer groups with their lag."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.brokers.capabilities import Capability
from conveyor.brokers.stream_types import GroupInfo, TopicInfo
from conveyor.errors import ConfigError, TopicNotFound
from conveyor.server.console.html import (
    Html,
    badge,
    duration,
    fmt,
    join,
    moment,
    size,
    table,
)
from conveyor.server.console.web import Console, Page, console_of

router = APIRouter()


@router.get("/topics")
async def topics(request: Request) -> Response:
    console = console_of(request)
    return await console.page(request, lambda session: topics_page(console))


@router.get("/groups")
async def groups(request: Request) -> Response:
    console = console_of(request)
    return await console.page(request, lambda session: groups_page(console))


async def topics_page(console: Console) -> Page:
    page = Page("Topics", "topics")
    broker = await console.state.broker()
    if Capability.STREAMS not in broker.capabilities:
        page.add("topics", "Topics", unsupported("topics"), live=False)
        return page
    infos: list[TopicInfo] = []
    for spec in await broker.list_topics():
        with contextlib.suppress(TopicNotFound):  # deleted meanwhile
            infos.append(await broker.describe_topic(spec.name))
    summary = table(
        ["Topic", "Partitions", "Records", "Retention", "Cleanup"],
        [
            [
                fmt('<a href="#topic-{}">{}</a>', info.spec.name, info.spec.name),
                info.spec.partitions,
                info.records,
                retention_text(info),
                info.spec.config.cleanup_policy.value,
            ]
            for info in infos
        ],
        empty="No topics yet.",
    )
    page.add("topics", "Topics", summary)
    page.add("partitions", "Partitions", join(topic_section(info) for info in infos))
    return page


def retention_text(info: TopicInfo) -> str:
    config = info.spec.config
    retention = config.retention
    if isinstance(retention, timedelta):
        retention = retention.total_seconds()
    kept = "forever" if retention is None else duration(retention)
    if config.retention_bytes is not None:
        kept += f", at most {size(config.retention_bytes)} a partition"
    return kept


def topic_section(info: TopicInfo) -> Html:
    rows = [
        [p.partition, p.start, p.end, p.records, size(p.bytes)]
        for p in sorted(info.partitions, key=lambda p: p.partition)
    ]
    return fmt(
        '<h3 id="topic-{}">{}</h3>{}',
        info.spec.name,
        info.spec.name,
        table(["Partition", "Start offset", "End offset", "Records", "Bytes"], rows),
    )


async def groups_page(console: Console) -> Page:
    page = Page("Consumer groups", "groups")
    broker = await console.state.broker()
    if Capability.CONSUMER_GROUPS not in broker.capabilities:
        page.add("groups", "Consumer groups", unsupported("consumer groups"), live=False)
        return page
    infos: list[GroupInfo] = []
    for name in await broker.list_groups():
        with contextlib.suppress(ConfigError):  # deleted meanwhile
            infos.append(await broker.describe_group(name))
    summary = table(
        ["Group", "State", "Members", "Topics", "Lag"],
        [
            [
                fmt('<a href="#group-{}">{}</a>', info.name, info.name),
                state_badge(info.state),
                len(info.members),
                ", ".join(sorted({p.topic for p in info.partitions})),
                info.lag,
            ]
            for info in infos
        ],
        empty="No consumer groups yet.",
    )
    page.add("groups", "Consumer groups", summary)
    page.add("lag", "Lag by partition", join(group_section(info) for info in infos))
    return page


def state_badge(state: str) -> Html:
    return badge(state, {"Stable": "ok", "Empty": "quiet"}.get(state, "warn"))


def group_section(info: GroupInfo) -> Html:
    partitions = table(
        ["Topic", "Partition", "Committed", "End offset", "Lag", "Owner"],
        [
            [
                p.topic,
                p.partition,
                "—" if p.committed is None else p.committed,
                p.end,
                p.lag,
                p.owner or "—",
            ]
            for p in sorted(info.partitions, key=lambda p: (p.topic, p.partition))
        ],
        empty="No partitions.",
    )
    members = table(
        ["Member", "Topics", "Owns", "Last heartbeat", "Session timeout"],
        [
            [
                m.member_id,
                ", ".join(m.topics),
                ", ".join(f"{topic}[{partition}]" for topic, partition in m.owned) or "—",
                moment(m.last_heartbeat),
                duration(m.session_timeout),
            ]
            for m in info.members
        ],
        empty="No members: nothing is reading.",
    )
    title = fmt("generation {}, {} assignor, lag {}", info.generation, info.assignor, info.lag)
    return fmt(
        '<h3 id="group-{}">{} {}</h3><p class="sub">{}</p>{}<h4>Members</h4>{}',
        info.name,
        info.name,
        state_badge(info.state),
        title,
        partitions,
        members,
    )


def unsupported(what: str) -> Html:
    return fmt("<p>{}</p>", f"This broker has no {what}.")
