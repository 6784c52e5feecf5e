"""Topics and consumer groups: list and describe them, produce records."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from conveyor.brokers.stream_types import GroupInfo, TopicInfo
from conveyor.server.errors import ApiError
from conveyor.server.schemas import PageQuery, ProduceRequest
from conveyor.server.state import ServerState, get_state

router = APIRouter(tags=["streams"])
State = Annotated[ServerState, Depends(get_state)]


def topic_json(info: TopicInfo) -> dict[str, Any]:
    return {
        "name": info.spec.name,
        "partition_count": info.spec.partitions,
        "config": info.spec.config.to_json(),
        "records": info.records,
        "partitions": [
            {
                "partition": p.partition,
                "start_offset": p.start,
                "end_offset": p.end,
                "records": p.records,
                "bytes": p.bytes,
            }
            for p in info.partitions
        ],
    }


def group_json(info: GroupInfo, *, detail: bool = False) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "name": info.name,
        "state": info.state,
        "generation": info.generation,
        "assignor": info.assignor,
        "members": len(info.members),
        "topics": sorted({p.topic for p in info.partitions}),
        "lag": info.lag,
    }
    if detail:
        summary["members"] = [
            {
                "member_id": m.member_id,
                "topics": list(m.topics),
                "generation": m.generation,
                "last_heartbeat": m.last_heartbeat,
                "session_timeout": m.session_timeout,
                "owned": [{"topic": t, "partition": p} for t, p in m.owned],
            }
            for m in info.members
        ]
        summary["partitions"] = [
            {
                "topic": p.topic,
                "partition": p.partition,
                "committed": p.committed,
                "end_offset": p.end,
                "lag": p.lag,
                "owner": p.owner,
            }
            for p in info.partitions
        ]
    return summary


@router.get("/topics", summary="List topics with their partitions' offsets")
async def list_topics(state: State, paging: PageQuery) -> dict[str, Any]:
    broker = await state.broker()
    specs = await broker.list_topics()
    items = [topic_json(await broker.describe_topic(s.name)) for s in paging.slice(specs)]
    return paging.page(items, len(specs))


@router.get("/topics/{name}", summary="A topic's config and its partitions' offsets")
async def describe_topic(name: str, state: State) -> dict[str, Any]:
    broker = await state.broker()
    return topic_json(await broker.describe_topic(name))


@router.post("/topics/{name}/records", status_code=201, summary="Produce a record to a topic")
async def produce(name: str, request: ProduceRequest, state: State) -> dict[str, Any]:
    """Returns where the record landed: its partition and offset."""
    metadata = await state.app.aproduce(
        name,
        request.value,
        key=request.key,
        headers=request.headers or None,
        timestamp=request.timestamp,
        partition=request.partition,
    )
    state.cache.clear()
    return {
        "topic": metadata.topic,
        "partition": metadata.partition,
        "offset": metadata.offset,
        "timestamp": metadata.timestamp,
    }


@router.get("/groups", summary="List consumer groups with their total lag")
async def list_groups(state: State, paging: PageQuery) -> dict[str, Any]:
    groups = await state.groups()
    return paging.page([group_json(g) for g in paging.slice(groups)], len(groups))


@router.get("/groups/{name}", summary="A group's members, and offsets and lag per partition")
async def describe_group(name: str, state: State) -> dict[str, Any]:
    broker = await state.broker()
    if name not in await broker.list_groups():
        raise ApiError(404, "GroupNotFound", f"there is no consumer group {name!r}")
    return group_json(await broker.describe_group(name), detail=True)
