"""The operator commands for queues and exchanges: what they print and what they change."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.brokers.types import Binding, ExchangeSpec, QueueSpec
from conveyor.message import Message
from conveyor.routing import ExchangeType
from tests.integration.cli_support import Cli, conveyor


@pytest.fixture
def cli(
    sqlite_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Cli:
    return Cli(sqlite_url, capsys, monkeypatch)


def test_declare_list_show_purge_and_delete_a_queue(cli: Cli) -> None:
    result = cli(
        "queues", "declare", "orders", "--max-priority", "5", "--message-ttl", "1h",
        "--dead-letter-exchange", "", "--dead-letter-routing-key", "orders.dead",
        "--max-bytes", "1MiB", "--overflow", "reject-publish",
    )  # fmt: skip
    assert (result.code, result.out) == (0, "declared queue 'orders'\n")
    assert cli("queues", "declare", "orders.dead").code == 0
    (spec,) = [q for q in cli.broker(lambda b: b.list_queues()) if q.name == "orders"]
    assert (spec.max_priority, spec.message_ttl, spec.max_bytes) == (5, 3600.0, 1024 * 1024)
    assert spec.dead_letter_routing_key == "orders.dead"

    assert (
        cli("publish", "orders", stdin="a\nb\n\nc\n").error
        == "published 3 messages to queue 'orders'\n"
    )
    table = cli("queues", "list").table()
    assert table[0] == [
        "NAME",
        "READY",
        "UNACKED",
        "DELAYED",
        "OLDEST",
        "DEAD",
        "LETTERS",
        "TO",
        "WORKERS",
    ]
    assert table[1][:4] == ["orders", "3", "0", "0"]
    assert table[1][5:] == ["orders.dead", "0"]
    rows = {row["name"]: row for row in cli("queues", "list", "--json").json()}
    assert rows["orders"]["ready"] == 3
    assert rows["orders"]["dead_letter_target"] == "orders.dead"
    assert rows["orders"]["options"]["max_priority"] == 5
    assert rows["orders.dead"]["dead_letter_target"] is None
    shown = cli("queues", "show", "orders").out
    assert "max_priority=5" in shown
    assert "dead_letter_exchange=''" in shown
    assert cli("queues", "show", "orders", "--json").json()["bytes"] == 3

    refused = cli("queues", "delete", "orders", "--if-empty")
    refused.one_line_error(1, "holds 3 messages")
    assert cli("queues", "purge", "orders").out == "purged 3 messages from 'orders'\n"
    assert cli.broker(lambda b: b.queue_stats("orders")).depth == 0
    cli("publish", "orders", stdin="x\n")
    assert cli("queues", "delete", "orders", "--json").json() == {"name": "orders", "deleted": 1}
    assert [q.name for q in cli.broker(lambda b: b.list_queues())] == ["orders.dead"]


def test_a_conflicting_declaration_is_one_line_and_changes_nothing(cli: Cli) -> None:
    cli("queues", "declare", "jobs", "--max-length", "10")
    result = cli("queues", "declare", "jobs", "--max-length", "20")
    result.one_line_error(1, "exists with options")
    (spec,) = cli.broker(lambda b: b.list_queues())
    assert spec.max_length == 10
    assert cli("queues", "declare", "jobs", "--max-length", "10", "--json").json() == {
        "name": "jobs",
        "created": False,
        "options": {"max_length": 10},
    }


@pytest.mark.parametrize(
    "arguments",
    [
        ["queues", "purge", "nope"],
        ["queues", "delete", "nope"],
        ["queues", "show", "nope"],
        ["consume", "nope", "--max-messages", "1"],
    ],
)
def test_an_unknown_queue_is_one_line_exit_1(cli: Cli, arguments: list[str]) -> None:
    cli("queues", "declare", "other")
    cli(*arguments).one_line_error(1, "queue 'nope' does not exist")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["queues"], "required: COMMAND"),
        (["queues", "declare"], "required: name"),
        (["queues", "declare", "q", "--max-priority", "0"], "not a positive whole number"),
        (["queues", "declare", "q", "--message-ttl", "soon"], "is not a duration"),
        (["queues", "list", "--bogus"], "unrecognized arguments: --bogus"),
        (["queues", "list", "--broker", "x", "--app", "m:a"], "not allowed with argument"),
        (["consume"], "a QUEUE or --topic TOPIC"),
        (["consume", "q", "--group", "g"], "--group is for a topic"),
        (["consume", "--topic", "t", "--no-ack"], "--no-ack is for a queue"),
        (["consume", "--topic", "t", "--offset", "3"], "--offset needs --partition"),
    ],
)
def test_usage_errors_are_one_line_exit_2(cli: Cli, arguments: list[str], message: str) -> None:
    cli("queues", "declare", "other")
    cli(*arguments).one_line_error(2, message)
    assert [q.name for q in cli.broker(lambda b: b.list_queues())] == ["other"]


def test_reading_a_database_that_is_not_there_creates_no_file(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    result = cli("queues", "list", "--broker", f"sqlite:///{missing}")
    result.one_line_error(1, "there is no database at")
    assert not missing.exists()
    assert cli("queues", "declare", "q", "--broker", f"sqlite:///{missing}").code == 0
    assert missing.exists()


def test_exchanges_bindings_and_publishing_through_them(cli: Cli) -> None:
    cli("queues", "declare", "audit")
    cli("queues", "declare", "urgent")
    assert cli("exchanges", "declare", "events", "--type", "topic").out == (
        "declared topic exchange 'events'\n"
    )
    assert cli("bind", "events", "audit", "--routing-key", "order.*").code == 0
    assert cli("bind", "events", "urgent", "--routing-key", "*.urgent").code == 0
    stats = cli.broker(lambda b: b.exchange_stats("events"))
    assert stats.bindings is not None
    assert sorted((b.queue, b.routing_key) for b in stats.bindings) == [
        ("audit", "order.*"),
        ("urgent", "*.urgent"),
    ]
    listed = cli("exchanges", "list", "events", "(default)")
    assert listed.table() == [
        ["NAME", "TYPE", "BINDINGS", "UNROUTABLE"],
        ["events", "topic", "2", "0"],
        ["(default)", "direct", "0", "0"],
    ]
    assert [row[0] for row in cli("exchanges", "list").table()] == ["NAME", "(default)", "events"]
    shown = cli("exchanges", "show", "events", "--json").json()
    assert shown["type"] == "topic"
    assert {"queue": "audit", "routing_key": "order.*", "arguments": {}} in shown["bindings"]

    result = cli("publish", "events", "--routing-key", "order.urgent", stdin="both\n")
    assert result.error == "published 1 message to exchange 'events'\n"
    dropped = cli("publish", "events", "--routing-key", "nothing", "--json", stdin="x\ny\n")
    assert dropped.json() == {"published": 2, "unroutable": 2, "exchange": "events"}
    refused = cli("publish", "events", "--routing-key", "nothing", "--mandatory", stdin="z\n")
    refused.one_line_error(1, "no queue is bound")
    assert cli("consume", "audit", "--max-messages", "1").lines()[0]["body"] == "both"
    assert cli("consume", "urgent", "--max-messages", "1").lines()[0]["body"] == "both"

    assert cli("unbind", "events", "audit", "--routing-key", "order.*").code == 0
    cli("unbind", "events", "audit", "--routing-key", "order.*").one_line_error(
        1, "there is no binding"
    )
    assert len(cli.broker(lambda b: b.exchange_stats("events")).bindings or ()) == 1
    assert cli("exchanges", "delete", "events").code == 0
    cli("exchanges", "delete", "events").one_line_error(1, "exchange 'events' does not exist")
    cli("bind", "nope", "audit").one_line_error(1, "'nope' does not exist")


def test_headers_bindings_take_header_values_and_x_match(cli: Cli) -> None:
    cli("queues", "declare", "eu")
    cli("exchanges", "declare", "by-region", "--type", "headers")
    result = cli("bind", "by-region", "eu", "--header", "region=eu,tier=gold", "--match", "any")
    assert result.code == 0, result.err
    (binding,) = cli.broker(lambda b: b.exchange_stats("by-region")).bindings or ()
    assert binding == Binding(
        "by-region", "eu", "", {"region": "eu", "tier": "gold", "x-match": "any"}
    )
    cli("bind", "by-region", "eu", "--match", "all").one_line_error(1, "--match goes with --header")


def test_publish_json_lines_and_a_bad_line_stops_with_what_was_sent(cli: Cli) -> None:
    cli("queues", "declare", "work", "--max-priority", "9")
    lines = (
        '{"body": {"n": 1}, "headers": {"h": "v"}, "priority": 7, "id": "m-1"}\n{"body": "two"}\n'
    )
    assert cli("publish", "work", "--format", "json", stdin=lines).code == 0
    (first, second) = cli("consume", "work", "--no-ack").lines()
    assert (first["id"], first["body"], first["headers"], first["priority"]) == (
        "m-1",
        '{"n":1}',
        {"h": "v"},
        7,
    )
    assert first["content_type"] == "application/json"
    assert second["body"] == "two"

    cli("queues", "purge", "work")
    cli("publish", "work", "--format", "json", stdin="not json\n").one_line_error(
        1, "line 1: not JSON"
    )
    assert cli.broker(lambda b: b.queue_stats("work")).depth == 0
    bad = cli("publish", "work", "--format", "json", "--batch-size", "1",
              stdin='{"body": "ok"}\n{"nobody": 1}\n')  # fmt: skip
    bad.one_line_error(1, "line 2: expected a JSON object with a 'body'; 1 sent before")
    assert cli.broker(lambda b: b.queue_stats("work")).depth == 1
    cli(
        "publish", "work", "--format", "json", stdin='{"body": "x", "routing_key": "k"}\n'
    ).one_line_error(1, "'routing_key' goes with an exchange")
    cli("publish", "nowhere", stdin="x\n").one_line_error(1, "no queue or exchange named 'nowhere'")
    for line, message in [
        ('{"body": "x", "ttl": "soon"}', "line 1: 'ttl' must be a number of seconds"),
        ('{"body": "x", "headers": [1]}', "'headers' must be a JSON object"),
        ('{"body": "x", "priority": 300}', "priority must be an integer 0-255"),
        ('{"body": "x", "colour": "red"}', "unknown field(s) colour"),
    ]:
        cli("publish", "work", "--format", "json", stdin=line).one_line_error(1, message)
    cli("publish", "work", "--header", "novalue", stdin="x\n").one_line_error(1, "is not KEY=VALUE")
    assert cli.broker(lambda b: b.queue_stats("work")).depth == 1


def test_consume_acks_what_it_prints_and_no_ack_changes_nothing(cli: Cli) -> None:
    async def fill(broker):
        await broker.declare_queue(QueueSpec("q"))
        await broker.publish_batch([Message(f"m{i}".encode(), routing_key="q") for i in range(5)])
        await broker.publish(Message(b"\xff\xfe", routing_key="q"))

    cli.broker(fill)
    peek = cli("consume", "q", "--no-ack", "--max-messages", "2")
    assert [line["body"] for line in peek.lines()] == ["m0", "m1"]
    assert [line["leased"] for line in peek.lines()] == [False, False]
    assert cli.broker(lambda b: b.queue_stats("q")).ready == 6

    taken = cli("consume", "q", "--max-messages", "3")
    assert (taken.code, taken.error) == (0, "consumed 3 messages\n")
    assert [line["body"] for line in taken.lines()] == ["m0", "m1", "m2"]
    assert all(line["queue"] == "q" and line["delivery_count"] == 1 for line in taken.lines())
    assert cli.broker(lambda b: b.queue_stats("q")).depth == 3

    assert cli("consume", "q", "--max-messages", "2", "--value-only").out == "m3\nm4\n"
    short = cli("consume", "q", "--max-messages", "5", "--timeout", "0.2")
    assert short.code == 1
    assert short.lines() == [short.lines()[0]]
    assert short.lines()[0]["body_base64"] == "//4="
    assert short.error == "conveyor: error: timed out after 0.2s idle with 1 of 5 messages\n"
    assert cli.broker(lambda b: b.queue_stats("q")).depth == 0
    idle = cli("consume", "q", "--timeout", "0.1")
    assert (idle.code, idle.out, idle.error) == (0, "", "consumed 0 messages\n")


def test_the_real_command_publishes_from_a_pipe_and_consumes(sqlite_url: str) -> None:
    assert conveyor("queues", "declare", "piped", url=sqlite_url).code == 0
    lines = "".join(f"line {i}\n" for i in range(1200))
    published = conveyor("publish", "piped", "--json", stdin=lines, url=sqlite_url)
    assert published.json() == {"published": 1200, "unroutable": 0, "exchange": ""}
    consumed = conveyor("consume", "piped", "--max-messages", "1200", url=sqlite_url)
    assert consumed.code == 0
    assert [line["body"] for line in consumed.lines()] == [f"line {i}" for i in range(1200)]


def test_spec_objects_in_json_are_plain(cli: Cli) -> None:
    cli.broker(lambda b: b.declare_exchange(ExchangeSpec("alt", ExchangeType.FANOUT)))
    assert cli("exchanges", "list", "alt", "--json").json() == [
        {"name": "alt", "type": "fanout", "bindings": 0, "unroutable": 0}
    ]


@pytest.mark.parametrize(
    "arguments",
    [
        ("queues", "list", "--broker", "sqlite://user:SENTINEL-PW@/tmp/x.db"),
        ("queues", "list", "--broker", "memory://user:SENTINEL-PW@x"),
        ("queues", "list", "--broker", "redis://:SENTINEL-PW@127.0.0.1:1/0"),
        ("queues", "list", "--broker", "amqp://u:SENTINEL-PW@127.0.0.1:1/"),
        ("worker", "no.such:app", "--broker", "redis://:SENTINEL-PW@127.0.0.1:1/0"),
    ],
)
def test_a_failing_command_never_prints_the_brokers_password(arguments: tuple[str, ...]) -> None:
    result = conveyor(*arguments)
    assert result.code != 0
    assert "SENTINEL-PW" not in result.out + result.err
    assert "***" in result.err
