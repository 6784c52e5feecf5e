"""The HTTP API for topics and consumer groups, against a real embedded broker."""

from __future__ import annotations

import json

import pytest

from conveyor.app import App
from conveyor.assignors import TopicPartition
from conveyor.brokers.stream_types import OffsetCommit
from tests.integration.server_support import error_of, serve

pytestmark = pytest.mark.parametrize("app", ["sqlite", "redis"], indirect=True)


async def test_producing_appends_records_and_answers_where_they_landed(app: App) -> None:
    await app.acreate_topic("orders", partitions=3)
    async with serve(app) as client:
        keyed = await client.post(
            "/api/topics/orders/records",
            json={"value": {"order": 1}, "key": "customer-7", "headers": {"source": "api"}},
        )
        text = await client.post(
            "/api/topics/orders/records", json={"value": "shipped", "partition": 2}
        )
        tombstone = await client.post(
            "/api/topics/orders/records", json={"value": None, "key": "customer-7"}
        )
        app.auto_create_topics = False  # with it on (the default), the topic is made
        missing = await client.post("/api/topics/nope/records", json={"value": 1})
        bad_partition = await client.post(
            "/api/topics/orders/records", json={"value": 1, "partition": 9}
        )
    assert keyed.status_code == 201
    landed = keyed.json()
    assert landed["topic"] == "orders"
    assert (text.json()["partition"], text.json()["offset"]) == (2, 0)
    assert tombstone.json()["partition"] == landed["partition"]
    assert tombstone.json()["offset"] == landed["offset"] + 1
    assert error_of(missing, 404)["type"] == "TopicNotFound"
    assert error_of(bad_partition, 404)["type"] == "PartitionNotFound"
    broker = await app.abroker()
    first, second = await broker.fetch({TopicPartition("orders", landed["partition"]): 0})
    assert json.loads(first.value or b"") == {"order": 1}
    assert first.key == b"customer-7"
    assert first.headers == {"source": "api"}
    assert second.value is None
    (shipped,) = await broker.fetch({TopicPartition("orders", 2): 0})
    assert shipped.value == b"shipped"


async def test_topics_are_listed_and_described_with_offsets(app: App) -> None:
    for name in ("a", "b", "c"):
        await app.acreate_topic(name, partitions=2)
    for value in range(3):
        await app.aproduce("b", value, partition=1)
    async with serve(app) as client:
        page = (await client.get("/api/topics", params={"limit": 1, "offset": 1})).json()
        described = (await client.get("/api/topics/b")).json()
        missing = await client.get("/api/topics/nope")
    assert (page["total"], [t["name"] for t in page["items"]]) == (3, ["b"])
    assert page["items"][0] == described
    assert described["partition_count"] == 2
    assert described["records"] == 3
    assert described["config"]["cleanup_policy"] == "delete"
    assert described["partitions"] == [
        {"partition": 0, "start_offset": 0, "end_offset": 0, "records": 0, "bytes": 0},
        {"partition": 1, "start_offset": 0, "end_offset": 3, "records": 3, "bytes": 3},
    ]
    assert error_of(missing, 404)["type"] == "TopicNotFound"


async def test_groups_show_members_and_lag_per_partition(app: App) -> None:
    await app.acreate_topic("events", partitions=2)
    for value in range(5):
        await app.aproduce("events", value, partition=value % 2)
    broker = await app.abroker()
    await broker.commit_offsets(OffsetCommit("billing", {TopicPartition("events", 0): 1}))
    await broker.commit_offsets(OffsetCommit("audit", {TopicPartition("events", 1): 2}))
    member = await broker.join_group("billing", ["events"], session_timeout=30)
    async with serve(app) as client:
        listing = (await client.get("/api/groups")).json()
        billing = (await client.get("/api/groups/billing")).json()
        missing = await client.get("/api/groups/nope")
    assert [g["name"] for g in listing["items"]] == ["audit", "billing"]
    assert listing["items"][0]["lag"] == 0
    assert listing["items"][1]["lag"] == 2 + 2
    assert billing["state"] == "Stable"
    (only,) = billing["members"]
    assert only["member_id"] == member.member_id
    assert only["owned"] == [
        {"topic": "events", "partition": 0},
        {"topic": "events", "partition": 1},
    ]
    assert billing["partitions"] == [
        {"topic": "events", "partition": 0, "committed": 1, "end_offset": 3, "lag": 2,
         "owner": member.member_id},
        {"topic": "events", "partition": 1, "committed": None, "end_offset": 2, "lag": 2,
         "owner": member.member_id},
    ]  # fmt: skip
    assert error_of(missing, 404)["type"] == "GroupNotFound"
