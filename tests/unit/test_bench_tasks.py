"""The ``tasks`` suite's pure helpers: ratios against the fastest peer, VmHWM, the registry.

Nothing here times anything or starts a worker: the suite runs with ``python -m bench tasks``.
"""

from __future__ import annotations

import pytest
from bench import tasks
from bench.harness import build_report
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
