"""The benchmark harness's pure helpers: statistics, targets and the JSON report's shape.

Nothing here times anything: the benchmarks themselves run with ``python -m bench``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench import queues
from bench.harness import (
    ONLY_ENV,
    Target,
    build_report,
    median_figures,
    only_parts,
    percentile,
    ru_maxrss_mb,
    selected,
    spread,
    write_json,
)

FAKE_MACHINE = {"cpu_model": "test cpu", "cores": 2, "python": "CPython 3.11", "sqlite": "3.40"}


@pytest.mark.parametrize(
    ("p", "expected"),
    [(0, 1.0), (25, 1.75), (50, 2.5), (75, 3.25), (100, 4.0)],
)
def test_percentile_interpolates_between_closest_ranks(p: float, expected: float) -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], p) == pytest.approx(expected)


def test_percentile_of_one_value_is_that_value() -> None:
    assert percentile([7.5], 99) == 7.5


def test_p99_of_a_hundred_and_one_values_is_the_second_largest() -> None:
    assert percentile([float(v) for v in range(101)], 99) == pytest.approx(99.0)


@pytest.mark.parametrize("p", [-1, 101, float("nan")])
def test_percentile_refuses_ranks_outside_0_to_100(p: float) -> None:
    with pytest.raises(ValueError, match="within 0-100"):
        percentile([1.0, 2.0], p)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_median_figures_takes_each_figure_over_the_runs_that_have_it() -> None:
    runs = [{"a": 1.0, "b": 10.0}, {"a": 3.0}, {"a": 2.0, "b": 30.0}]
    assert median_figures(runs) == {"a": 2.0, "b": 20.0}
    assert spread(runs, "a") == (1.0, 3.0)
    assert spread([{"a": 1.0}], "a") is None


def test_targets_judge_thresholds_and_alternatives() -> None:
    at_least = Target("fast", "rate", ">=", 100)
    at_most = Target("small", "rss_ratio", "<=", 1.1, alternative=("rss_growth", "<=", 5))
    assert at_least.met({"rate": 100}) is True
    assert at_least.met({"rate": 99}) is False
    assert at_least.met({}) is None
    assert at_most.met({"rss_ratio": 1.5, "rss_growth": 4}) is True
    assert at_most.met({"rss_ratio": 1.5, "rss_growth": 6}) is False
    assert at_most.describe() == "rss_ratio <= 1.1 or rss_growth <= 5"


def test_ru_maxrss_is_kilobytes_on_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.platform", "linux")
    assert ru_maxrss_mb(2048) == 2.0


def fake_results(scale: float) -> dict[str, float]:
    return {
        "publish_single_per_s": 20_000 * scale,
        "raw_sqlite_insert_single_per_s": 30_000,
        "publish_batch_per_s": 150_000 * scale,
        "raw_sqlite_insert_batch_per_s": 250_000,
        "rate_shallow_per_s": 70_000,
        "rate_deep_per_s": 63_000 * scale,
        "rss_shallow_mb": 28.0,
        "rss_deep_mb": 29.0,
    }


def test_queues_ratios_compare_figures_of_one_run() -> None:
    ratios = queues.ratios(fake_results(1.0))
    assert ratios["publish_single_vs_raw_sqlite"] == pytest.approx(2 / 3)
    assert ratios["publish_batch_vs_raw_sqlite"] == pytest.approx(0.6)
    assert ratios["rate_deep_vs_shallow"] == pytest.approx(0.9)
    assert ratios["rss_deep_minus_shallow_mb"] == pytest.approx(1.0)
    assert "publish_single_vs_raw_sqlite" not in queues.ratios({"publish_single_per_s": 1.0})


def test_report_has_the_documented_shape_and_survives_json(tmp_path: Path) -> None:
    runs = [(r, queues.ratios(r)) for r in (fake_results(s) for s in (0.9, 1.0, 1.2))]
    report = build_report("queues", FAKE_MACHINE, runs, queues.TARGETS, quick=True)
    path = tmp_path / "out" / "bench.json"
    write_json(path, report)
    loaded = json.loads(path.read_text())

    assert {"suite", "machine", "results", "ratios"} <= set(loaded)
    assert loaded["suite"] == "queues"
    assert loaded["machine"] == FAKE_MACHINE
    assert loaded["quick"] is True
    assert loaded["repeat"] == 3
    assert len(loaded["runs"]) == 3
    for section in ("results", "ratios"):
        assert all(isinstance(name, str) for name in loaded[section])
        assert all(isinstance(value, int | float) for value in loaded[section].values())
    assert loaded["results"]["publish_single_per_s"] == pytest.approx(20_000)  # the median
    assert loaded["ratios"]["publish_single_vs_raw_sqlite"] == pytest.approx(2 / 3)
    by_figure = {target["figure"]: target for target in loaded["targets"]}
    assert by_figure["publish_single_vs_raw_sqlite"]["met"] is True
    assert by_figure["rss_deep_vs_shallow"]["met"] is True
    assert by_figure["latency_p50_ms"]["met"] is None  # not in the fake results


def test_a_report_needs_a_run() -> None:
    with pytest.raises(ValueError, match="at least one run"):
        build_report("queues", FAKE_MACHINE, [])


def test_json_refuses_nan(tmp_path: Path) -> None:
    report = build_report("queues", FAKE_MACHINE, [({"x": float("nan")}, {})])
    with pytest.raises(ValueError, match="Out of range float"):
        write_json(tmp_path / "bench.json", report)


def test_only_names_the_parts_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ONLY_ENV, raising=False)
    assert only_parts() == frozenset()
    assert [selected("redis"), selected("anything")] == [True, True]
    monkeypatch.setenv(ONLY_ENV, " redis, kafka ,")
    assert only_parts() == {"redis", "kafka"}
    assert [selected(part) for part in ("redis", "kafka", "rabbitmq")] == [True, True, False]
    monkeypatch.setenv(ONLY_ENV, "")
    assert selected("rabbitmq")


def test_the_report_says_which_parts_ran() -> None:
    from bench import backends
    from bench.__main__ import format_report

    results = {"redis_raw_publish_per_s": 1.0}
    machine = {**FAKE_MACHINE, "kernel": "Linux 6"}
    report = build_report("backends", machine, [(results, {})], only=["redis"])
    assert format_report(report, backends.SUITE).startswith("suite backends (only redis): ")
    report = build_report("backends", machine, [(results, {})], only=None)
    assert format_report(report, backends.SUITE).startswith("suite backends: ")
