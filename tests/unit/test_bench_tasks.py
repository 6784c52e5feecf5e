"""The ``tasks`` suite's pure helpers: ratios against the fastest peer, VmHWM, the registry,
and the parts ``--only`` picks (the Redis part among them).

Nothing here times anything or starts a worker: the suite runs with ``python -m bench tasks``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench import tasks, tasks_app
from bench.harness import ONLY_ENV, build_report
from bench.peers import PEERS, peer_named


def test_e2e_is_compared_with_the_fastest_peer_of_the_same_run() -> None:
    results = {
        "e2e_per_s": 40_000.0,
        "e2e_async_per_s": 50_000.0,
        "enqueue_single_per_s": 9_000.0,
        "enqueue_single_async_per_s": 24_000.0,
        "raw_sqlite_enqueue_per_s": 12_000.0,
        "enqueue_batch_per_s": 30_000.0,
        "publish_batch_per_s": 60_000.0,
        "peer_celery_rabbitmq_e2e_per_s": 4_000.0,
        "peer_huey_redis_e2e_per_s": 5_000.0,
        "peer_huey_redis_enqueue_per_s": 6_000.0,
        "peer_rq_redis_enqueue_per_s": 3_000.0,
    }
    found = tasks.ratios(results)
    assert found["e2e_vs_fastest_peer"] == pytest.approx(8.0)
    assert found["e2e_async_vs_fastest_peer"] == pytest.approx(10.0)
    assert found["enqueue_single_vs_fastest_peer"] == pytest.approx(1.5)
    assert found["enqueue_single_async_vs_fastest_peer"] == pytest.approx(4.0)
    assert found["enqueue_batch_vs_publish_batch"] == pytest.approx(0.5)
    assert found["enqueue_single_vs_raw_sqlite"] == pytest.approx(0.75)
    assert found["raw_sqlite_enqueue_vs_fastest_peer"] == pytest.approx(2.0)


def test_no_ratio_without_a_peer_or_without_the_figure() -> None:
    assert tasks.ratios({"e2e_per_s": 40_000.0}) == {}
    assert tasks.ratios({"peer_huey_redis_e2e_per_s": 5_000.0}) == {}
    assert tasks.ratios({"e2e_per_s": 1.0, "peer_huey_redis_e2e_per_s": 0.0}) == {}


def test_fastest_peer_only_reads_peer_figures_with_that_suffix() -> None:
    results = {"e2e_per_s": 9e9, "peer_a_e2e_per_s": 2.0, "peer_a_enqueue_per_s": 7.0}
    assert tasks.fastest_peer(results, "_e2e_per_s") == 2.0
    assert tasks.fastest_peer(results, "_enqueue_per_s") == 7.0
    assert tasks.fastest_peer({}, "_e2e_per_s") is None


def test_peak_rss_is_read_from_vmhwm_in_mebibytes() -> None:
    status = "Name:\tpython\nVmPeak:\t  400000 kB\nVmHWM:\t   30720 kB\nVmRSS:\t   20480 kB\n"
    assert tasks.peak_rss_mb(status) == pytest.approx(30.0)
    assert tasks.peak_rss_mb("Name:\tzombie\n") is None
    with pytest.raises(ValueError, match="expected kB"):
        tasks.peak_rss_mb("VmHWM:\t 3 MB\n")


def test_every_peer_has_its_figures_units_and_a_unique_name() -> None:
    names = [peer.name for peer in PEERS]
    assert len(set(names)) == len(names)
    for peer in PEERS:
        assert peer_named(peer.name) is peer
        for figure in (f"peer_{peer.name}_e2e_per_s", f"peer_{peer.name}_enqueue_per_s"):
            assert figure in tasks.FIGURES
            assert tasks.SUITE.units[figure] == "tasks/s"
        assert peer.port in (6379, 5672)
    with pytest.raises(KeyError, match="no peer named"):
        peer_named("nope")


def test_targets_are_judged_on_the_suite_figures() -> None:
    results = {
        "e2e_per_s": 50_000.0,
        "peer_huey_redis_e2e_per_s": 4_000.0,
        "latency_p50_ms": 0.5,
        "latency_p99_ms": 6.0,
    }
    report = build_report("tasks", {}, [(results, tasks.ratios(results))], tasks.TARGETS)
    met = {target["figure"]: target["met"] for target in report["targets"]}
    assert met == {
        "e2e_vs_fastest_peer": True,
        "latency_p50_ms": True,
        "latency_p99_ms": False,
        "worker_rss_mb": None,
        "enqueue_single_vs_fastest_peer": None,
        "enqueue_single_async_vs_fastest_peer": None,
        "enqueue_batch_vs_publish_batch": None,
    }


def test_quick_sizes_are_smaller_everywhere() -> None:
    for field in tasks.FULL.__slots__:
        assert getattr(tasks.QUICK, field) <= getattr(tasks.FULL, field)


# the Redis part


def test_redis_e2e_is_compared_with_the_fastest_peer_on_redis_only() -> None:
    results = {
        "e2e_per_s": 60_000.0,
        "redis_e2e_per_s": 15_000.0,
        "peer_celery_rabbitmq_e2e_per_s": 6_000.0,
        "peer_dramatiq_redis_e2e_per_s": 4_000.0,
        "peer_huey_redis_e2e_per_s": 5_000.0,
        "peer_rq_redis_e2e_per_s": 400.0,
        "peer_arq_redis_e2e_per_s": 300.0,
    }
    found = tasks.ratios(results)
    assert found["redis_e2e_vs_fastest_peer"] == pytest.approx(3.0)
    assert found["e2e_vs_fastest_peer"] == pytest.approx(10.0)  # every peer, as before
    assert tasks.fastest_peer_on(results, "redis") == 5_000.0
    assert tasks.fastest_peer_on(results, "rabbitmq") == 6_000.0


def test_no_redis_ratio_without_its_figure_or_a_redis_peer() -> None:
    rabbitmq_only = {"redis_e2e_per_s": 12_000.0, "peer_celery_rabbitmq_e2e_per_s": 6_000.0}
    assert "redis_e2e_vs_fastest_peer" not in tasks.ratios(rabbitmq_only)
    assert tasks.fastest_peer_on(rabbitmq_only, "redis") is None
    assert "redis_e2e_vs_fastest_peer" not in tasks.ratios({"peer_huey_redis_e2e_per_s": 1.0})
    zero = {"redis_e2e_per_s": 1.0, "peer_huey_redis_e2e_per_s": 0.0}
    assert "redis_e2e_vs_fastest_peer" not in tasks.ratios(zero)


def test_the_redis_peers_are_dramatiq_huey_rq_and_arq() -> None:
    on_redis = {peer.name for peer in PEERS if peer.backend == "redis"}
    assert on_redis == {"dramatiq_redis", "huey_redis", "rq_redis", "arq_redis"}


def test_the_redis_figure_ratio_and_target_are_in_the_suite() -> None:
    assert tasks.SUITE.units["redis_e2e_per_s"] == "tasks/s"
    assert tasks.SUITE.units["redis_e2e_vs_fastest_peer"] == "x"
    (target,) = tasks.REDIS_TARGETS
    assert (target.figure, target.op, target.threshold) == ("redis_e2e_vs_fastest_peer", ">=", 3)
    assert target in tasks.SUITE.targets
    assert target not in tasks.TARGETS
    assert tasks.QUICK.redis_e2e < tasks.FULL.redis_e2e
    results = {"redis_e2e_per_s": 9_000.0, "peer_huey_redis_e2e_per_s": 4_000.0}
    report = build_report("tasks", {}, [(results, tasks.ratios(results))], tasks.REDIS_TARGETS)
    assert [t["met"] for t in report["targets"]] == [False]


def test_the_redis_app_has_a_key_prefix_of_its_own_on_database_0() -> None:
    url = tasks.redis_app_url("conveyor-bench-0badcafe:")
    assert url == "redis://127.0.0.1:6379/0?prefix=conveyor-bench-0badcafe:"
    assert tasks_app.build(url).broker_url == url


def test_only_picks_the_parts_and_their_peers(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, object]] = []

    def part(name: str) -> Any:
        def measure(directory: Path, sizes: tasks.Sizes) -> dict[str, float]:
            calls.append((name, None))
            return {}

        return measure

    def peers(directory: Path, sizes: tasks.Sizes, backends: frozenset[str]) -> dict[str, float]:
        calls.append(("peers", backends))
        return {}

    for name in ("embedded", "rabbitmq", "redis"):
        monkeypatch.setattr(tasks, f"measure_{name}", part(name))
    monkeypatch.setattr(tasks, "measure_peers", peers)
    monkeypatch.setenv(ONLY_ENV, "redis")
    tasks.measure(Path("unused"), tasks.QUICK)
    assert calls == [("redis", None), ("peers", {"redis"})]
    calls.clear()
    monkeypatch.setenv(ONLY_ENV, "rabbitmq,redis")
    tasks.measure(Path("unused"), tasks.QUICK)
    assert calls == [("rabbitmq", None), ("redis", None), ("peers", {"redis", "rabbitmq"})]
    calls.clear()
    monkeypatch.delenv(ONLY_ENV)
    tasks.measure(Path("unused"), tasks.QUICK)
    assert calls == [
        ("embedded", None),
        ("rabbitmq", None),
        ("redis", None),
        ("peers", {"redis", "rabbitmq"}),
    ]
    assert tasks.SUITE.parts == ("embedded", "rabbitmq", "redis")


def test_a_failing_redis_backend_is_skipped_with_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(directory: Path, task: str, count: int) -> float:
        raise NotImplementedError("the redis backend\nlacks declare_queue")

    monkeypatch.setattr(tasks, "server_listening", lambda host, port: True)
    monkeypatch.setattr(tasks, "drain_redis", broken)
    assert tasks.measure_redis(tmp_path, tasks.QUICK) == {}
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.endswith(
        "redis e2e: skipped, Conveyor's redis:// backend failed the drain "
        "(NotImplementedError: the redis backend lacks declare_queue)"
    )
    monkeypatch.setattr(tasks, "server_listening", lambda host, port: False)
    assert tasks.measure_redis(tmp_path, tasks.QUICK) == {}
    assert "nothing listens on 127.0.0.1:6379" in capsys.readouterr().err
