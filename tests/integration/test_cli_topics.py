"""The operator commands for topics and consumer groups, and the console producer/consumer."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conveyor import Capability, open_broker
from conveyor.assignors import TopicPartition
from conveyor.brokers.stream_types import CleanupPolicy, OffsetCommit, ProducerRecord, TopicSpec
from conveyor.partitioner import partition_for_key
from tests.backend_urls import BACKENDS
from tests.integration.cli_support import Cli, conveyor


@pytest.fixture(params=["sqlite", "redis"])
def cli(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Cli:
    """The commands on a SQLite file, or on Redis."""
    return Cli(BACKENDS[request.param](tmp_path), capsys, monkeypatch)


def test_create_list_describe_alter_and_delete_a_topic(cli: Cli) -> None:
    compacts = Capability.COMPACTION in open_broker(cli.url).capabilities
    policy = "compact,delete" if compacts else "delete"
    result = cli(
        "topics", "create", "clicks", "--partitions", "3",
        "--config", "retention=2d",
        "--config", f"cleanup_policy={policy},retention_bytes=10MiB",
    )  # fmt: skip
    assert (result.code, result.out) == (0, "created topic 'clicks' with 3 partitions\n")
    (spec,) = cli.broker(lambda b: b.list_topics())
    assert spec.partitions == 3
    assert spec.config.retention == 2 * 86400
    assert spec.config.cleanup_policy is CleanupPolicy(policy)
    assert spec.config.retention_bytes == 10 * 1024 * 1024
    again = cli("topics", "create", "clicks", "--partitions", "3", "--config", "retention=48h,"
                f"cleanup_policy={policy},retention_bytes=10485760", "--json")  # fmt: skip
    assert again.json()["created"] is False

    cli("produce", "clicks", "--key-separator", ":", stdin="u1:home\nu2:cart\nu1:buy\n")
    assert cli("topics", "list").table() == [
        ["NAME", "PARTITIONS", "RECORDS", "BYTES", "CLEANUP", "RETENTION"],
        ["clicks", "3", "3", "17", policy, "2d"],  # u1home u2cart u1buy
    ]
    (listed,) = cli("topics", "list", "--json").json()
    assert (listed["name"], listed["partitions"], listed["records"]) == ("clicks", 3, 3)
    described = cli("topics", "describe", "clicks")
    assert "retention=2d" in described.out
    assert described.table()[-4:] == [
        ["PARTITION", "START", "END", "RECORDS", "BYTES"],
        *[[str(p), "0", str(n), str(n), str(b)] for p, n, b in _logs(cli, "clicks")],
    ]
    data = cli("topics", "describe", "clicks", "--json").json()
    assert data["partitions"] == 3
    assert sum(p["records"] for p in data["by_partition"]) == 3
    assert data["config"]["cleanup_policy"] == policy

    altered = cli("topics", "alter", "clicks", "--partitions", "4", "--config", "retention=forever",
                  "--delete-config", "cleanup_policy")  # fmt: skip
    assert altered.code == 0, altered.err
    (spec,) = cli.broker(lambda b: b.list_topics())
    assert (spec.partitions, spec.config.retention) == (4, None)
    assert spec.config.cleanup_policy is CleanupPolicy.DELETE
    assert spec.config.retention_bytes == 10 * 1024 * 1024  # kept: alter changes only what it names
    assert cli("topics", "delete", "clicks").out == "deleted topic 'clicks' and its 3 records\n"
    assert cli.broker(lambda b: b.list_topics()) == []


def _logs(cli: Cli, topic: str) -> list[tuple[int, int, int]]:
    info = cli.broker(lambda b: b.describe_topic(topic))
    return [(p.partition, p.records, p.bytes) for p in info.partitions]


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        (["topics", "create", "t", "--config", "retention.ms=5"], 1, "config 'retention.ms'"),
        (["topics", "create", "t", "--config", "retention=soon"], 1, "'soon' is not a duration"),
        (["topics", "create", "t", "--config", "cleanup_policy=shred"], 1, "must be one of"),
        (["topics", "create", "t", "--config", "retention"], 1, "is not KEY=VALUE"),
        (["topics", "create", "t", "--partitions", "0"], 2, "not a positive whole number"),
        (["topics", "alter", "existing", "--partitions", "1"], 1, "can only grow"),
        (["topics", "alter", "existing"], 2, "needs --partitions, --config or --delete-config"),
        (["topics", "describe", "nope"], 1, "topic 'nope' does not exist"),
        (["topics", "delete", "nope"], 1, "topic 'nope' does not exist"),
        (["produce", "nope"], 1, "topic 'nope' does not exist"),
        (["produce", "existing", "--partition", "2"], 1, "has partitions 0-1, not 2"),
        (["consume", "--topic", "nope"], 1, "topic 'nope' does not exist"),
        (["consume", "--topic", "existing", "--partition", "5"], 1, "has partitions 0-1, not 5"),
        (["consume", "--topic", "existing", "--partition", "0", "--offset", "9"], 1, "outside"),
    ],
)  # fmt: skip
def test_bad_topic_input_is_one_line_and_changes_nothing(
    cli: Cli, arguments: list[str], code: int, message: str
) -> None:
    cli("topics", "create", "existing", "--partitions", "2")
    cli(*arguments).one_line_error(code, message)
    assert cli.broker(lambda b: b.list_topics()) == [TopicSpec("existing", 2)]


def test_console_produce_then_consume_round_trip_with_keys(sqlite_url: str) -> None:
    assert conveyor("topics", "create", "orders", "--partitions", "4", url=sqlite_url).code == 0
    lines = "".join(f"customer-{i % 5}|order {i}\n" for i in range(20)) + "customer-0|gone\n"
    produced = conveyor(
        "produce", "orders", "--key-separator", "|", "--null-marker", "gone", "--header", "src=cli",
        "--json", stdin=lines, url=sqlite_url,
    )  # fmt: skip
    assert produced.code == 0, produced.err
    assert produced.json()["produced"] == 21
    consumed = conveyor(
        "consume", "--topic", "orders", "--from-beginning", "--max-messages", "21", url=sqlite_url
    )
    assert (consumed.code, consumed.error) == (0, "consumed 21 records\n")
    records = consumed.lines()
    assert sorted(r["value"] or "" for r in records) == sorted(
        ["", *[f"order {i}" for i in range(20)]]
    )
    for record in records:
        assert record["topic"] == "orders"
        assert record["partition"] == partition_for_key(record["key"].encode(), 4)
        assert record["headers"] == {"src": "cli"}
        assert record["timestamp"] > time.time() - 60
    per_key: dict[str, list[str | None]] = {}
    for record in records:  # per key, offsets rise in the order the lines were written
        per_key.setdefault(record["key"], []).append(record["value"])
    assert per_key["customer-0"] == ["order 0", "order 5", "order 10", "order 15", None]


def test_consume_without_a_group_starts_at_the_end(cli: Cli) -> None:
    cli("topics", "create", "t")
    cli("produce", "t", stdin="old\n")
    result = cli("consume", "--topic", "t", "--timeout", "0.2")
    assert (result.code, result.out) == (0, "")
    from_start = cli("consume", "--topic", "t", "--partition", "0", "--offset", "0",
                     "--max-messages", "1", "--value-only")  # fmt: skip
    assert from_start.out == "old\n"


def _fill(cli: Cli, topic: str = "events", partitions: int = 2, count: int = 10) -> None:
    async def work(broker):
        await broker.create_topic(TopicSpec(topic, partitions))
        records = [ProducerRecord(f"v{i}".encode(), partition=i % partitions) for i in range(count)]
        await broker.produce(topic, records)

    cli.broker(work)


def test_a_group_commits_what_it_printed_and_describe_shows_the_lag(cli: Cli) -> None:
    _fill(cli)
    first = cli("consume", "--topic", "events", "--group", "readers", "--from-beginning",
                "--max-messages", "4")  # fmt: skip
    assert len(first.lines()) == 4
    committed = cli.broker(lambda b: b.committed_offsets("readers"))
    assert sum(committed.values()) == 4
    rest = cli("consume", "--topic", "events", "--group", "readers", "--timeout", "0.3")
    assert len(rest.lines()) == 6
    assert {(r["partition"], r["offset"]) for r in first.lines() + rest.lines()} == {
        (p, o) for p in range(2) for o in range(5)
    }
    (header, row) = cli("groups", "list").table()
    assert header == ["GROUP", "STATE", "MEMBERS", "GENERATION", "TOPICS", "LAG"]
    assert row[:3] + row[4:] == ["readers", "Empty", "0", "events", "0"]
    _fill(cli, "more", 1, 3)
    cli.broker(lambda b: b.produce("events", [ProducerRecord(b"late", partition=1)]))
    described = cli("groups", "describe", "readers")
    assert described.table()[-3:] == [
        ["TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID"],
        ["events", "0", "5", "5", "0", "-"],
        ["events", "1", "5", "6", "1", "-"],
    ]
    data = cli("groups", "describe", "readers", "--json").json()
    assert (data["state"], data["lag"], data["members"]) == ("Empty", 1, [])
    assert data["partitions"][1] == {
        "topic": "events", "partition": 1, "committed": 5, "end": 6, "lag": 1, "owner": None
    }  # fmt: skip
    cli("groups", "describe", "nope").one_line_error(1, "there is no consumer group 'nope'")
    assert cli("groups", "delete", "readers").code == 0
    assert cli.broker(lambda b: b.list_groups()) == []
    cli("groups", "delete", "readers").one_line_error(1, "no consumer group 'readers'")


def test_reset_offsets_is_a_dry_run_until_execute(cli: Cli) -> None:
    _fill(cli)
    tp0, tp1 = TopicPartition("events", 0), TopicPartition("events", 1)
    cli.broker(lambda b: b.commit_offsets(OffsetCommit("g", {tp0: 4, tp1: 2})))

    plan = cli("groups", "reset-offsets", "g", "--topic", "events", "--to-earliest")
    assert plan.table() == [
        ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"],
        ["g", "events", "0", "4", "0"],
        ["g", "events", "1", "2", "0"],
    ]
    assert "dry run: nothing was committed" in plan.err
    assert cli.broker(lambda b: b.committed_offsets("g")) == {tp0: 4, tp1: 2}

    done = cli("groups", "reset-offsets", "g", "--topic", "events:1", "--to-latest", "--execute",
               "--json")  # fmt: skip
    assert done.json() == {
        "group": "g",
        "executed": True,
        "offsets": [{"group": "g", "topic": "events", "partition": 1, "current": 2, "new": 5}],
    }
    assert done.error == ""
    assert cli.broker(lambda b: b.committed_offsets("g")) == {tp0: 4, tp1: 5}

    clamped = cli("groups", "reset-offsets", "g", "--all-topics", "--to-offset", "99", "--execute")
    assert "clamped" in clamped.err
    assert cli.broker(lambda b: b.committed_offsets("g")) == {tp0: 5, tp1: 5}
    cli("groups", "reset-offsets", "g", "--all-topics", "--shift-by", "-2", "--execute")
    assert cli.broker(lambda b: b.committed_offsets("g")) == {tp0: 3, tp1: 3}
    future = "2999-01-01T00:00:00+00:00"
    cli("groups", "reset-offsets", "g", "--all-topics", "--to-datetime", future, "--execute")
    assert cli.broker(lambda b: b.committed_offsets("g")) == {tp0: 5, tp1: 5}
    past = "2000-01-01"
    cli("groups", "reset-offsets", "g", "--all-topics", "--to-datetime", past, "--execute")
    assert cli.broker(lambda b: b.committed_offsets("g")) == {tp0: 0, tp1: 0}


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        (["nope", "--topic", "events", "--to-earliest"], 1, "there is no consumer group 'nope'"),
        (["g", "--topic", "nope", "--to-earliest"], 1, "topic 'nope' does not exist"),
        (["g", "--topic", "events:7", "--to-earliest"], 1, "has partitions 0-1, not 7"),
        (["g", "--topic", "events:x", "--to-earliest"], 1, "'x' is not a partition number"),
        (["g", "--topic", "events", "--to-datetime", "yesterday"], 2, "not an ISO 8601 date-time"),
        (["g", "--topic", "events", "--to-offset", "-1"], 2, "not an offset"),
        (["g", "--topic", "events"], 2, "one of the arguments --to-earliest"),
        (["g", "--to-latest"], 2, "one of the arguments --topic --all-topics is required"),
        (["g", "--topic", "events", "--to-latest", "--dry-run", "--execute"], 2, "not allowed"),
    ],
)
def test_bad_reset_offsets_input_is_one_line_and_commits_nothing(
    cli: Cli, arguments: list[str], code: int, message: str
) -> None:
    _fill(cli)
    offsets = {TopicPartition("events", 0): 1}
    cli.broker(lambda b: b.commit_offsets(OffsetCommit("g", offsets)))
    cli("groups", "reset-offsets", *arguments, "--execute").one_line_error(code, message)
    assert cli.broker(lambda b: b.committed_offsets("g")) == offsets


def test_reset_offsets_is_refused_while_the_group_has_a_live_member(cli: Cli) -> None:
    _fill(cli)
    member = cli.broker(lambda b: b.join_group("live", ["events"], session_timeout=30))
    plan = cli("groups", "reset-offsets", "live", "--all-topics", "--to-latest")
    assert plan.code == 0
    assert "has 1 active member(s); --execute is refused" in plan.err
    refused = cli("groups", "reset-offsets", "live", "--all-topics", "--to-latest", "--execute")
    refused.one_line_error(1, "group 'live' has 1 active member(s); stop them")
    assert cli.broker(lambda b: b.committed_offsets("live")) == {}
    described = cli("groups", "describe", "live", "--json").json()
    assert described["state"] == "Stable"
    assert [m["member_id"] for m in described["members"]] == [member.member_id]
    assert "MEMBER" in cli("groups", "describe", "live").out
    cli("groups", "delete", "live").one_line_error(1, "has active members")

    cli.broker(lambda b: b.leave_group("live", member.member_id))
    done = cli("groups", "reset-offsets", "live", "--topic", "events", "--to-latest", "--execute")
    assert done.code == 0, done.err
    assert cli.broker(lambda b: b.committed_offsets("live")) == {
        TopicPartition("events", 0): 5,
        TopicPartition("events", 1): 5,
    }


def test_ctrl_c_stops_a_group_consumer_that_commits_and_leaves(cli: Cli) -> None:
    _fill(cli, count=6)
    command = [sys.executable, "-m", "conveyor", "consume", "--topic", "events", "--group", "g",
               "--from-beginning", "--broker", cli.url]  # fmt: skip
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as a shell starts a background job: the child must install its own SIGINT handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert child.stdout is not None
        lines = [child.stdout.readline() for _ in range(6)]
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()  # a consumer that did not stop must not outlive the test
        child.wait()
    assert child.returncode == 130
    assert out == ""
    assert err.splitlines() == [f"conveyor: broker {cli.location}", "consumed 6 records"]
    assert sorted(json.loads(line)["value"] for line in lines) == [f"v{i}" for i in range(6)]
    assert sum(cli.broker(lambda b: b.committed_offsets("g")).values()) == 6
    assert cli("groups", "describe", "g", "--json").json()["state"] == "Empty"


@pytest.fixture
def redis_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Cli:
    return Cli(BACKENDS["redis"](tmp_path), capsys, monkeypatch)


def test_a_compacted_topic_where_the_backend_cannot_compact_is_one_line(
    redis_cli: Cli,
) -> None:
    result = redis_cli("topics", "create", "users", "--config", "cleanup_policy=compact")
    assert result.code == 1
    assert result.err.splitlines()[-1].startswith(
        "conveyor: error: the redis broker does not support compaction"
    )
    assert redis_cli.broker(lambda b: b.list_topics()) == []
