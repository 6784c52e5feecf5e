"""The HTTP API for queues, exchanges and dead letters, against a real embedded broker."""

from __future__ import annotations

import base64

from conveyor import Binding, ExchangeSpec, ExchangeType, Message, QueueSpec
from conveyor.app import App
from conveyor.brokers.types import JobStatus
from conveyor.codecs import loads
from conveyor.errors import PermanentError
from conveyor.worker.consume import Worker
from tests.integration.server_support import error_of, serve


async def test_queues_are_listed_by_page_with_their_stats(app: App) -> None:
    broker = await app.abroker()
    for name in ("a", "b", "c", "d"):
        await broker.declare_queue(QueueSpec(name, max_length=10))
    await broker.publish_batch([Message(b"1", routing_key="b"), Message(b"2", routing_key="b")])
    async with serve(app) as client:
        page = (await client.get("/api/queues", params={"limit": 2, "offset": 1})).json()
        beyond = (await client.get("/api/queues", params={"offset": 10})).json()
    assert (page["total"], page["limit"], page["offset"]) == (4, 2, 1)
    assert [q["name"] for q in page["items"]] == ["b", "c"]
    b = page["items"][0]
    assert b["options"] == {"max_length": 10}
    assert b["stats"]["ready"] == 2
    assert b["stats"]["published"] == 2
    assert b["stats"]["oldest_age"] >= 0
    assert beyond == {"items": [], "total": 4, "limit": 100, "offset": 10}


async def test_a_queue_is_described_with_its_dead_letter_queue(app: App) -> None:
    await app.ensure_queue(await app.abroker(), "emails")
    async with serve(app) as client:
        emails = (await client.get("/api/queues/emails")).json()
        dead = (await client.get("/api/queues/emails.dlq")).json()
        missing = await client.get("/api/queues/nope")
    assert emails["dead_letter_queue"] == "emails.dlq"
    assert emails["is_dead_letter_queue"] is False
    assert emails["options"]["max_priority"] == 9
    assert dead["is_dead_letter_queue"] is True
    assert error_of(missing, 404)["type"] == "QueueNotFound"


async def test_browsing_shows_messages_without_consuming_them(app: App) -> None:
    broker = await app.abroker()
    await broker.declare_queue(QueueSpec("q"))
    bodies = [b'{"n":1}', b"plain text", b"\xff\x00"]
    types = ["application/json", "text/plain", "application/octet-stream"]
    for body, kind in zip(bodies, types, strict=True):
        await broker.publish(Message(body, routing_key="q", headers={"h": 1}, content_type=kind))
    async with serve(app) as client:
        page = (await client.get("/api/queues/q/messages", params={"limit": 2})).json()
        rest = (await client.get("/api/queues/q/messages", params={"offset": 2})).json()
        missing = await client.get("/api/queues/nope/messages")
    assert page["total"] == 3
    first, second = page["items"]
    assert (first["body"], first["body_encoding"]) == ({"n": 1}, "json")
    assert (second["body"], second["body_encoding"]) == ("plain text", "text")
    (third,) = rest["items"]
    assert third["body_encoding"] == "base64"
    assert base64.b64decode(third["body"]) == b"\xff\x00"
    assert first["headers"] == {"h": 1}
    assert first["leased"] is False
    assert first["delivery_count"] == 0
    assert error_of(missing, 404)["type"] == "QueueNotFound"
    assert (await broker.queue_stats("q")).ready == 3
    deliveries = await broker.receive("q", max_messages=3)
    assert [d.message.body for d in deliveries] == bodies


async def test_publishing_to_a_queue_stores_the_message(app: App) -> None:
    broker = await app.abroker()
    await broker.declare_queue(QueueSpec("q", max_priority=5))
    async with serve(app) as client:
        json_body = await client.post(
            "/api/queues/q/messages", json={"body": {"order": 7}, "headers": {"k": "v"}}
        )
        text_body = await client.post(
            "/api/queues/q/messages", json={"body": "hello", "priority": 5}
        )
        delayed = await client.post("/api/queues/q/messages", json={"body": 1, "delay": 60})
        missing = await client.post("/api/queues/nope/messages", json={"body": 1})
    assert json_body.status_code == 202
    assert json_body.json()["queue"] == "q"
    assert delayed.status_code == 202
    assert error_of(missing, 404)["type"] == "QueueNotFound"
    stats = await broker.queue_stats("q")
    assert (stats.ready, stats.delayed) == (2, 1)
    first, second = await broker.receive("q", max_messages=5)
    assert first.message.id == text_body.json()["id"]
    assert (first.message.body, first.message.priority) == (b"hello", 5)
    assert first.message.content_type == "text/plain; charset=utf-8"
    assert second.message.id == json_body.json()["id"]
    assert loads(second.message.body) == {"order": 7}
    assert second.message.headers == {"k": "v"}


async def test_exchanges_are_listed_described_and_published_to(app: App) -> None:
    broker = await app.abroker()
    await broker.declare_queue(QueueSpec("eu-orders"))
    await broker.declare_exchange(ExchangeSpec("orders", ExchangeType.TOPIC))
    await broker.declare_exchange(ExchangeSpec("audit", ExchangeType.FANOUT))
    await broker.bind(Binding("orders", "eu-orders", "order.eu.*"))
    async with serve(app) as client:
        listing = (await client.get("/api/exchanges")).json()
        orders = (await client.get("/api/exchanges/orders")).json()
        routed = await client.post(
            "/api/exchanges/orders/messages", json={"routing_key": "order.eu.paid", "body": 1}
        )
        dropped = await client.post(
            "/api/exchanges/orders/messages", json={"routing_key": "order.us.paid", "body": 2}
        )
        refused = await client.post(
            "/api/exchanges/orders/messages",
            json={"routing_key": "order.us.paid", "body": 3, "mandatory": True},
        )
        missing = await client.get("/api/exchanges/nope")
        after = (await client.get("/api/exchanges/orders")).json()
    assert [e["name"] for e in listing["items"]] == ["", "audit", "orders"]
    assert listing["items"][0]["default"] is True
    assert listing["total"] == 3
    assert orders["type"] == "topic"
    assert orders["bindings"] == [
        {"queue": "eu-orders", "routing_key": "order.eu.*", "arguments": {}}
    ]
    assert routed.status_code == 202
    assert routed.json()["routed"] == 1
    assert dropped.json()["routed"] == 0
    assert error_of(refused, 409)["type"] == "Unroutable"
    assert error_of(missing, 404)["type"] == "ExchangeNotFound"
    assert after["unroutable"] == 1
    (delivery,) = await broker.receive("eu-orders")
    assert delivery.message.id == routed.json()["id"]


async def dead_jobs(app: App, count: int) -> list[str]:
    @app.task(name="charge", max_retries=0)
    def charge(order: int) -> None:
        raise PermanentError(f"card declined for order {order}")

    ids = [(await charge.adelay(order)).id for order in range(count)]
    await Worker(app).run_until_idle()
    return ids


async def test_dead_letters_are_listed_and_inspected(app: App) -> None:
    ids = await dead_jobs(app, 3)
    async with serve(app) as client:
        page = (await client.get("/api/queues/default/dead-letters", params={"limit": 2})).json()
        one = (await client.get(f"/api/queues/default/dead-letters/{ids[1]}")).json()
        missing = await client.get("/api/queues/default/dead-letters/nope")
        no_queue = await client.get("/api/queues/nope/dead-letters")
    assert page["total"] == 3
    assert [d["job_id"] for d in page["items"]] == ids[:2]
    first = page["items"][0]
    assert first["task"] == "charge"
    assert first["arguments"] == {"order": 0}
    assert first["error_message"] == "card declined for order 0"
    assert first["attempts"] == 1
    assert "traceback" not in first
    assert one["job_id"] == ids[1]
    assert "card declined for order 1" in one["traceback"]
    assert one["message"]["body"] == {"order": 1}
    assert error_of(missing, 404)["type"] == "DeadLetterNotFound"
    assert error_of(no_queue, 404)["type"] == "QueueNotFound"


async def test_a_malformed_dead_letter_header_shows_as_missing_fields_not_a_500(
    app: App,
) -> None:
    (good,) = await dead_jobs(app, 1)
    broker = await app.abroker()
    malformed = {
        "x-failure": "not a table",
        "x-death": 7,
        "task": ["not", "text"],
    }
    odd = {"x-failure": {"attempts": "two", "failed_at": "yesterday", "task": 5}, "x-death": []}
    for headers in (malformed, odd):
        await broker.publish(Message(b"{oops", routing_key="default.dlq", headers=headers))
    async with serve(app) as client:
        page = await client.get("/api/queues/default/dead-letters")
    assert page.status_code == 200
    items = page.json()["items"]
    assert items[0]["job_id"] == good
    assert [(item["task"], item["attempts"], item["failed_at"]) for item in items[1:]] == [
        (None, None, None),
        (None, None, None),
    ]


async def test_a_huge_delay_is_a_422_naming_the_field(app: App) -> None:
    @app.task(name="later")
    def later() -> None:
        return None

    async with serve(app) as client:
        huge = await client.post("/api/jobs", json={"task": "later", "delay": 1e300})
        published = await client.post(
            "/api/queues/default/messages", json={"body": "x", "delay": 1e300}
        )
    assert error_of(huge, 422)["field"] == "delay"
    assert error_of(published, 422)["field"] == "delay"


async def test_dead_letters_are_replayed_by_id_to_another_queue_then_purged(app: App) -> None:
    ids = await dead_jobs(app, 4)
    broker = await app.abroker()
    async with serve(app) as client:
        chosen = await client.post(
            "/api/queues/default/dead-letters/replay",
            json={"job_ids": ids[:2], "to_queue": "retry-later"},
        )
        rest = await client.post(
            "/api/queues/default/dead-letters/replay", json={"job_ids": [ids[2]]}
        )
        purged = await client.delete("/api/queues/default/dead-letters")
        empty = (await client.get("/api/queues/default/dead-letters")).json()
        bad_ids = await client.post(
            "/api/queues/default/dead-letters/replay", json={"job_ids": "all"}
        )
    assert chosen.json() == {"replayed": 2, "queue": "retry-later"}
    assert rest.json() == {"replayed": 1, "queue": "default"}
    assert purged.json() == {"purged": 1}
    assert empty["items"] == []
    assert empty["total"] == 0
    assert error_of(bad_ids, 422)["field"] == "job_ids"
    moved = await broker.browse("retry-later")
    assert [m.message.id for m in moved] == ids[:2]
    assert (await broker.results().get_job(ids[0])).status is JobStatus.QUEUED
    (back,) = await broker.browse("default")
    assert back.message.id == ids[2]
