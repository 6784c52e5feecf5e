"""The ``streams`` suite's pure helpers: ratios, consumer positions, the raw baseline's SQL.

Nothing here times anything or opens a broker: the suite runs with ``python -m bench streams``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from bench import streams
from bench.harness import build_report

from conveyor.brokers.stream_types import Membership, Record, TopicPartition

A0, A1, A2 = (TopicPartition("a", p) for p in range(3))


def record(partition: int, offset: int, value: bytes | None = b"xyz") -> Record:
    return Record("a", partition, offset, 0.0, None, value, {})


def test_ratios_compare_within_the_run_and_skip_missing_sides() -> None:
    results = {
        "produce_batch_per_s": 150_000.0,
        "raw_sqlite_append_batch_per_s": 300_000.0,
        "consume_per_s": 600_000.0,
        "redis_xreadgroup_per_s": 400_000.0,
    }
    found = streams.ratios(results)
    assert found["produce_vs_raw_sqlite"] == pytest.approx(0.5)
    assert found["consume_vs_redis_xreadgroup"] == pytest.approx(1.5)
    assert streams.ratios({"consume_per_s": 1.0, "redis_xreadgroup_per_s": 0.0}) == {}
    assert streams.ratios({"produce_batch_per_s": 1.0, "consume_per_s": 1.0}) == {}


def test_rotated_lets_every_partition_lead_in_turn() -> None:
    positions = {A0: 5, A1: 6, A2: 7}
    assert list(streams.rotated(positions, 0)) == [A0, A1, A2]
    assert list(streams.rotated(positions, 1)) == [A1, A2, A0]
    assert list(streams.rotated(positions, 5)) == [A2, A0, A1]
    assert streams.rotated(positions, 2) == positions
    assert streams.rotated({}, 3) == {}


def test_advance_moves_each_partition_past_what_was_read() -> None:
    positions = {A0: 3, A1: 0, A2: 9}
    records = [record(0, 3), record(0, 4), record(1, 0), record(1, 1, None), record(1, 2)]
    assert streams.advance(positions, records) == 12
    assert positions == {A0: 5, A1: 3, A2: 9}
    assert streams.advance(positions, []) == 0
    assert positions == {A0: 5, A1: 3, A2: 9}


@pytest.mark.parametrize("offset", [4, 6], ids=["repeat", "gap"])
def test_advance_refuses_a_record_that_is_not_the_next_one(offset: int) -> None:
    positions = {A0: 5}
    with pytest.raises(RuntimeError, match=rf"a\[0\] returned offset {offset} at position 5"):
        streams.advance(positions, [record(0, offset)])


def test_the_raw_baseline_runs_the_engines_append_on_its_tables(tmp_path: Path) -> None:
    assert len(streams.RAW_SCHEMA) == 3  # partitions, records and the records' time index
    connection = streams.raw_connection(tmp_path / "raw.db")
    try:
        connection.execute("BEGIN IMMEDIATE")
        (end,) = connection.execute(streams.RAW_END_OFFSET, (streams.RAW_TOPIC_ID, 2)).fetchone()
        connection.execute(streams.RAW_ADVANCE, (3, 3, 300, streams.RAW_TOPIC_ID, 2))
        connection.executemany(streams.RAW_INSERT, streams.raw_rows(2, end, 3, 1_000))
        connection.execute("COMMIT")
        assert connection.execute(
            "SELECT partition, end_offset, records, bytes FROM partitions WHERE partition = 2"
        ).fetchone() == (2, 3, 3, 300)
        offsets = connection.execute("SELECT offset FROM records ORDER BY offset").fetchall()
        assert offsets == [(0,), (1,), (2,)]
        with pytest.raises(sqlite3.IntegrityError):
            connection.executemany(streams.RAW_INSERT, streams.raw_rows(2, 2, 1, 1_000))
    finally:
        connection.close()


def test_keys_are_distinct_and_of_the_key_size() -> None:
    keys = streams.distinct_keys(1_000)
    assert len(keys) == 1_000
    assert {len(key) for key in keys} == {streams.KEY_SIZE}
    assert len(set(keys)) == 1_000


def membership(assigned: list[int], owned: list[int]) -> Membership:
    tp = [TopicPartition(streams.REBALANCE_TOPIC, p) for p in range(12)]
    return Membership("g", "m", 2, tuple(tp[p] for p in assigned), tuple(tp[p] for p in owned), ())


def test_a_rebalance_must_end_with_every_partition_owned_once() -> None:
    first, second = list(range(6)), list(range(6, 12))
    streams.check_split(membership(first, first), membership(second, second))
    with pytest.raises(RuntimeError, match="after the rebalance"):
        streams.check_split(membership(first, first), membership(second, second[:3]))
    with pytest.raises(RuntimeError, match="after the rebalance"):
        streams.check_split(membership(first, [*first, 6]), membership(second, second))


def test_targets_are_judged_on_the_suite_figures() -> None:
    results = {"produce_batch_per_s": 160_000.0, "consume_per_s": 250_000.0}
    report = build_report("streams", {}, [(results, streams.ratios(results))], streams.TARGETS)
    met = {target["figure"]: target["met"] for target in report["targets"]}
    assert met == {"produce_batch_per_s": True, "consume_per_s": False, "latency_p50_ms": None}


def test_every_figure_has_a_unit_and_quick_sizes_are_smaller() -> None:
    for name in (*streams.FIGURES, *streams.RATIOS):
        assert streams.SUITE.units[name]
    for target in streams.TARGETS:
        assert target.figure in streams.FIGURES or target.figure in streams.RATIOS
    for field in streams.FULL.__slots__:
        assert getattr(streams.QUICK, field) <= getattr(streams.FULL, field)
