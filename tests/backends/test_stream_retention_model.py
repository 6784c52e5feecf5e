"""Retention and compaction of the embedded engine, checked against a model of a Kafka log.

The model of a partition is deliberately simple: the list of records ever written (offset,
timestamp, key, value; offsets dense from 0, size = key + value bytes, no headers) and the
list the engine should still hold, with its log start offset. Its rules are Kafka's:

- delete: drop records from the head while the head record is older than ``retention`` or
  the partition is over ``retention_bytes``; stop at the first record that is neither (a
  prefix rule, like Kafka dropping whole old segments).
- compact: keep the latest record per key at its original offset; drop every older one,
  and a latest tombstone once it is older than ``delete_retention``. Offsets never change.
- compact,delete: per pass, head deletion then a compaction sweep. With small steps the
  two interleave, so there the properties are the invariants below and, without size
  retention, the state repeated passes settle to.

Invariants, checked after every operation (even halfway through a sweep): records are
never rewritten or moved; describe_topic's counts match what a fetch from the log start
returns, and fetching before the start or past the end raises OffsetOutOfRange; the latest
record of every key is there unless retention took it or it is a tombstone past
delete_retention, and then no older value of that key is there either; every record
missing after the start was compactable, and (time retention only) every record before it
was too old or compactable.

Timestamps are hours away from every cutoff (old records are days old, young ones minutes
or hours old, some in the future), so the wall clock the engine reads never decides an
outcome. ``RETENTION_STEP`` (deletions per transaction) is drawn small as well as at its
default, so passes run as many bounded steps; single steps between appends leave sweeps
half done when new records arrive.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conveyor import Broker, open_broker
from conveyor.brokers.embedded import EmbeddedBroker, retention, stream_broker, streams
from conveyor.brokers.embedded.rows import now_ms
from conveyor.brokers.stream_types import (
    CleanupPolicy,
    ProducerRecord,
    Record,
    RetentionReport,
    TopicConfig,
    TopicPartition,
    TopicSpec,
)
from conveyor.brokers.types import as_float
from conveyor.errors import OffsetOutOfRange

TOPIC = "log"
PARTITIONS = 2
MINUTE, HOUR, DAY = 60, 3600, 86_400
RETENTION = DAY
DEFAULT_STEP = stream_broker.RETENTION_STEP
STEPS = (1, 2, 3, DEFAULT_STEP)
# Ages in seconds before "now": days old (past RETENTION), hours old (past a 3 h
# delete_retention, within RETENTION), minutes old (within both), and an hour in the future.
OLD, AGED, FRESH, FUTURE = 2 * DAY, 12 * HOUR, 10 * MINUTE, -HOUR
PAST_AGES = (OLD, AGED, FRESH)
# Tombstones: dropped as soon as they are latest; after 3 h; (practically) never.
DELETE_RETENTIONS = (0.0, 3.0 * HOUR, 100 * 365.0 * DAY)
KEYS = (b"a", b"b", b"c", b"")


# operations


@dataclass(frozen=True)
class Put:
    partition: int
    age: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Append:
    puts: tuple[Put, ...]


Op = Append | Literal["enforce", "step"]


# the model


@dataclass(frozen=True)
class Entry:
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None

    @property
    def size(self) -> int:
        return len(self.key or b"") + len(self.value or b"")


@dataclass(frozen=True)
class Rules:
    """The topic's config turned into cutoffs at the test's fixed "now"."""

    config: TopicConfig
    now_ms: int

    @property
    def retention_cutoff(self) -> int | None:
        seconds = as_float(self.config.retention)
        return None if seconds is None else self.now_ms - int(seconds * 1000)

    @property
    def tombstone_cutoff(self) -> int:
        return self.now_ms - int((as_float(self.config.delete_retention) or 0.0) * 1000)

    def too_old(self, entry: Entry) -> bool:
        cutoff = self.retention_cutoff
        return cutoff is not None and entry.timestamp_ms < cutoff


@dataclass
class ModelPartition:
    written: list[Entry] = field(default_factory=list)
    kept: list[Entry] = field(default_factory=list)
    start: int = 0

    @property
    def end(self) -> int:
        return len(self.written)

    def append(self, timestamp_ms: int, key: bytes | None, value: bytes | None) -> None:
        entry = Entry(self.end, timestamp_ms, key, value)
        self.written.append(entry)
        self.kept.append(entry)

    def latest(self) -> dict[bytes | None, Entry]:
        return {entry.key: entry for entry in self.written}

    def superseded(self, entry: Entry) -> bool:
        return self.latest()[entry.key].offset > entry.offset

    def compactable(self, entry: Entry, rules: Rules) -> bool:
        """A newer record has its key, or it is a tombstone past delete_retention."""
        expired_tombstone = entry.value is None and entry.timestamp_ms < rules.tombstone_cutoff
        return self.superseded(entry) or expired_tombstone

    def delete_head(self, rules: Rules) -> int:
        limit = rules.config.retention_bytes
        excess = 0 if limit is None else sum(e.size for e in self.kept) - limit
        removed_bytes = count = 0
        for entry in self.kept:
            if not rules.too_old(entry) and removed_bytes >= excess:
                break
            removed_bytes += entry.size
            count += 1
        gone, self.kept = self.kept[:count], self.kept[count:]
        # The start moves to the first record kept (past any gap compaction left before
        # it), or just past the last record removed.
        if self.kept:
            self.start = self.kept[0].offset
        elif gone:
            self.start = gone[-1].offset + 1
        return count

    def compact(self, rules: Rules) -> tuple[int, int]:
        superseded = [e for e in self.kept if self.superseded(e)]
        expired = [e for e in self.kept if not self.superseded(e) and self.compactable(e, rules)]
        self.kept = [e for e in self.kept if not self.compactable(e, rules)]
        return len(superseded), len(expired)

    def settled(self, rules: Rules) -> list[Entry]:
        """What repeated passes converge to, with time retention only: compact, then drop
        the old head of what is left."""
        survivors = list(self.written)
        if rules.config.compacted:
            survivors = [e for e in survivors if not self.compactable(e, rules)]
        if rules.config.deletes:
            while survivors and rules.too_old(survivors[0]):
                survivors.pop(0)
        return survivors


@dataclass
class Model:
    rules: Rules
    partitions: list[ModelPartition] = field(
        default_factory=lambda: [ModelPartition() for _ in range(PARTITIONS)]
    )

    def enforce(self) -> RetentionReport:
        """One pass: per partition, head deletion then a full compaction sweep."""
        config = self.rules.config
        deleted = compacted = tombstones = 0
        for partition in self.partitions:
            if config.deletes:
                deleted += partition.delete_head(self.rules)
            if config.compacted:
                superseded, expired = partition.compact(self.rules)
                compacted += superseded
                tombstones += expired
        return RetentionReport(deleted, compacted, tombstones)


# reading the engine


@dataclass(frozen=True)
class Observed:
    start: int
    end: int
    records: int
    bytes: int
    entries: list[Entry]


def _entry(record: Record, partition: int) -> Entry:
    assert (record.topic, record.partition, record.headers) == (TOPIC, partition, {})
    return Entry(record.offset, round(record.timestamp * 1000), record.key, record.value)


async def observe(broker: Broker, partition: int) -> Observed:
    """describe_topic's view of a partition, and everything a fetch from its start returns."""
    info = (await broker.describe_topic(TOPIC)).partitions[partition]
    tp = TopicPartition(TOPIC, partition)
    records = await broker.fetch({tp: info.start}, max_records=10_000)
    if info.start > 0:
        with pytest.raises(OffsetOutOfRange):
            await broker.fetch({tp: info.start - 1})
    with pytest.raises(OffsetOutOfRange):
        await broker.fetch({tp: info.end + 1})
    entries = [_entry(record, partition) for record in records]
    return Observed(info.start, info.end, info.records, info.bytes, entries)


def check_exact(seen: Observed, model: ModelPartition) -> None:
    expected = Observed(
        model.start,
        model.end,
        len(model.kept),
        sum(e.size for e in model.kept),
        model.kept,
    )
    assert seen == expected


def check_invariants(seen: Observed, model: ModelPartition, rules: Rules) -> None:
    """What holds at any moment, even halfway through a bounded pass."""
    assert seen.end == model.end
    assert seen.records == len(seen.entries)
    assert seen.bytes == sum(e.size for e in seen.entries)
    assert 0 <= seen.start <= seen.end
    for entry in seen.entries:  # nothing rewritten, nothing moved, nothing before the start
        assert seen.start <= entry.offset
        assert entry == model.written[entry.offset]
    config = rules.config
    if not config.deletes:
        assert seen.start == 0
    if not config.compacted:
        assert seen.entries == model.written[seen.start :]
        return
    present = {entry.offset for entry in seen.entries}
    for key, last in model.latest().items():
        if last.offset in present:
            continue
        expired_tombstone = last.value is None and last.timestamp_ms < rules.tombstone_cutoff
        assert last.offset < seen.start or expired_tombstone, f"latest record of {key!r} lost"
        assert all(e.key != key for e in seen.entries), f"an older value of {key!r} came back"
    for entry in model.written[seen.start :]:
        assert entry.offset in present or model.compactable(entry, rules), entry
    if config.retention_bytes is None:
        for entry in model.written[: seen.start]:
            assert rules.too_old(entry) or model.compactable(entry, rules), entry


# running a scenario


@dataclass(frozen=True)
class Scenario:
    config: TopicConfig
    step: int
    ops: tuple[Op, ...]

    @property
    def exact(self) -> bool:
        """Whether each pass is predictable record for record.

        Delete alone and compact alone are. With both, size retention runs before the
        sweep in every bounded step, so with small steps what it removes depends on how
        far the sweep got: then only the invariants, and where they exist the settled
        state, are checked.
        """
        if "step" in self.ops:
            return False
        both = self.config.cleanup_policy is CleanupPolicy.COMPACT_DELETE
        return not both or self.step == DEFAULT_STEP


class StepLimit:
    """Stands in for ``retention.enforce``: counts a pass's bounded steps, and stops a pass
    that would never end with an assertion rather than a hung test."""

    def __init__(self) -> None:
        self.enforce = retention.enforce
        self.count = self.limit = 0

    def expect(self, model: Model, step: int) -> None:
        """A partition needs a step per ``step`` offsets to finish a sweep left half done,
        as many for one new sweep, and deletes at least ``step`` records in each step it
        asks for more; partitions advance together, but allow the sum of their needs."""
        self.count = 0
        self.limit = sum(2 * (-(-p.end // step)) + 3 for p in model.partitions)

    def __call__(
        self,
        connection: sqlite3.Connection,
        stored: streams.StoredTopic,
        now: int,
        budget: int,
        swept: set[int],
    ) -> tuple[RetentionReport, bool]:
        self.count += 1
        assert self.count <= self.limit, (
            f"a retention pass took over {self.limit} steps of {budget} and is still going"
        )
        return self.enforce(connection, stored, now, budget, swept)


async def one_step(broker: Broker, step: int) -> None:
    """One bounded retention transaction, as enforce_retention runs them."""
    embedded = cast(EmbeddedBroker, broker)
    await embedded._stream_write(
        lambda c: retention.enforce(c, streams.topic(c, TOPIC), now_ms(), step, set())
    )


async def settle(broker: Broker, model: Model, scenario: Scenario, limit: StepLimit) -> None:
    """Passes until two in a row remove nothing (the first may finish an earlier sweep)."""
    quiet = 0
    for _ in range(20):
        limit.expect(model, scenario.step)
        report = await broker.enforce_retention(TOPIC)
        quiet = quiet + 1 if report == RetentionReport() else 0
        if quiet == 2:
            return
    raise AssertionError("retention passes never stopped removing records")


async def apply(broker: Broker, model: Model, op: Op, scenario: Scenario, limit: StepLimit) -> None:
    if isinstance(op, Append):
        now = model.rules.now_ms // 1000
        records = [
            ProducerRecord(p.value, key=p.key, timestamp=float(now - p.age), partition=p.partition)
            for p in op.puts
        ]
        metadata = await broker.produce(TOPIC, records)
        for put, placed in zip(op.puts, metadata, strict=True):
            partition = model.partitions[put.partition]
            assert (placed.partition, placed.offset) == (put.partition, partition.end)
            partition.append((now - put.age) * 1000, put.key, put.value)
    elif op == "step":
        limit.expect(model, scenario.step)
        await one_step(broker, scenario.step)
    else:
        limit.expect(model, scenario.step)
        report = await broker.enforce_retention(TOPIC)
        expected = model.enforce()
        if scenario.exact:
            assert report == expected


async def check(broker: Broker, model: Model, op: Op, scenario: Scenario) -> None:
    limit = scenario.config.retention_bytes
    for index, partition in enumerate(model.partitions):
        seen = await observe(broker, index)
        check_invariants(seen, partition, model.rules)
        if scenario.exact:
            check_exact(seen, partition)
        elif op == "enforce" and limit is not None:
            assert seen.bytes <= limit


async def run(url: str, scenario: Scenario, limit: StepLimit) -> None:
    broker = open_broker(url)
    await broker.connect()
    try:
        await broker.create_topic(TopicSpec(TOPIC, PARTITIONS, scenario.config))
        model = Model(Rules(scenario.config, int(time.time()) * 1000))
        for op in scenario.ops:
            await apply(broker, model, op, scenario, limit)
            await check(broker, model, op, scenario)
        if scenario.config.retention_bytes is None:
            await settle(broker, model, scenario, limit)
            for index, partition in enumerate(model.partitions):
                seen = await observe(broker, index)
                check_invariants(seen, partition, model.rules)
                assert seen.entries == partition.settled(model.rules)
    finally:
        await broker.close()


def run_on(url: str, scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the batch size of a pass changes, never what a pass does.
    monkeypatch.setattr(stream_broker, "RETENTION_STEP", scenario.step)
    limit = StepLimit()
    monkeypatch.setattr(retention, "enforce", limit)
    try:
        asyncio.run(run(url, scenario, limit))
    finally:
        monkeypatch.undo()


def run_in_memory(scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    run_on("memory://?retention_interval=86400", scenario, monkeypatch)


# strategies


def puts(ages: Sequence[int], keys: st.SearchStrategy[bytes | None]) -> st.SearchStrategy[Put]:
    return st.builds(
        Put,
        partition=st.integers(0, PARTITIONS - 1),
        age=st.sampled_from(ages),
        key=keys,
        value=st.none() | st.binary(max_size=6),
    )


def operations(
    ages: Sequence[int],
    keys: st.SearchStrategy[bytes | None],
    passes: Sequence[Literal["enforce", "step"]] = ("enforce",),
) -> st.SearchStrategy[tuple[Op, ...]]:
    appends = st.builds(Append, st.lists(puts(ages, keys), min_size=1, max_size=5).map(tuple))
    op: st.SearchStrategy[Op] = appends | st.sampled_from(passes)
    return st.lists(op, max_size=14).map(tuple)


compact_keys = st.sampled_from(KEYS)
any_keys = st.none() | compact_keys
retention_bytes = st.none() | st.integers(1, 40)
steps = st.sampled_from(STEPS)


@st.composite
def delete_scenarios(draw: st.DrawFn) -> Scenario:
    config = TopicConfig(
        retention=draw(st.sampled_from((None, RETENTION))),
        retention_bytes=draw(retention_bytes),
        cleanup_policy=CleanupPolicy.DELETE,
    )
    return Scenario(config, draw(steps), draw(operations((*PAST_AGES, FUTURE), any_keys)))


@st.composite
def compact_scenarios(draw: st.DrawFn) -> Scenario:
    config = TopicConfig(
        cleanup_policy=CleanupPolicy.COMPACT,
        delete_retention=draw(st.sampled_from(DELETE_RETENTIONS)),
        min_compaction_lag=0,
    )
    return Scenario(config, draw(steps), draw(operations(PAST_AGES, compact_keys)))


@st.composite
def compact_delete_scenarios(draw: st.DrawFn) -> Scenario:
    config = TopicConfig(
        retention=RETENTION,
        retention_bytes=draw(retention_bytes),
        cleanup_policy=CleanupPolicy.COMPACT_DELETE,
        delete_retention=draw(st.sampled_from(DELETE_RETENTIONS)),
        min_compaction_lag=0,
    )
    return Scenario(config, draw(steps), draw(operations(PAST_AGES, compact_keys)))


@st.composite
def interrupted_scenarios(draw: st.DrawFn) -> Scenario:
    """Single bounded steps between appends: sweeps that new records land in the middle of."""
    config = TopicConfig(
        retention=RETENTION,
        cleanup_policy=draw(st.sampled_from((CleanupPolicy.COMPACT, CleanupPolicy.COMPACT_DELETE))),
        delete_retention=draw(st.sampled_from(DELETE_RETENTIONS)),
        min_compaction_lag=0,
    )
    ops = draw(operations(PAST_AGES, compact_keys, ("enforce", "step", "step")))
    return Scenario(config, draw(st.sampled_from((1, 2, 3))), ops)


def _put(key: bytes, value: bytes | None, age: int = FRESH) -> Put:
    return Put(0, age, key, value)


# A key deleted by a tombstone, then written again: the new value survives and no older
# value reappears, whether or not the tombstone itself has gone.
REWRITTEN = Scenario(
    TopicConfig(cleanup_policy=CleanupPolicy.COMPACT, delete_retention=0),
    1,
    (
        Append((_put(b"k", b"v1"), _put(b"k", b"v2"), _put(b"j", b"x"))),
        Append((_put(b"k", None),)),
        "enforce",
        Append((_put(b"k", b"v3"), _put(b"j", None))),
        "enforce",
        "enforce",
        Append((_put(b"k", b"v4"),)),
        "enforce",
    ),
)


# the properties


@settings(max_examples=200)
@given(scenario=delete_scenarios())
def test_delete_policy_drops_the_head_like_the_model(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_in_memory(scenario, monkeypatch)


@settings(max_examples=200)
@given(scenario=compact_scenarios())
@example(scenario=REWRITTEN)
@example(
    scenario=Scenario(
        TopicConfig(cleanup_policy=CleanupPolicy.COMPACT, delete_retention=3.0 * HOUR),
        2,
        (
            Append((_put(b"k", b"v1", OLD), _put(b"k", None, FRESH), _put(b"j", None, AGED))),
            "enforce",
            Append((_put(b"k", b"v2", AGED),)),
            "enforce",
        ),
    )
)
def test_compaction_keeps_the_latest_record_per_key(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_in_memory(scenario, monkeypatch)


@settings(max_examples=200)
@given(scenario=compact_delete_scenarios())
def test_compact_delete_applies_both_rules(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_in_memory(scenario, monkeypatch)


@settings(max_examples=200)
@given(scenario=interrupted_scenarios())
@example(
    scenario=Scenario(
        TopicConfig(cleanup_policy=CleanupPolicy.COMPACT, delete_retention=0),
        1,
        (
            Append((_put(b"k", b"v1"), _put(b"j", b"x"), _put(b"k", None))),
            "step",
            Append((_put(b"k", b"v2"),)),
            "step",
            "step",
            Append((_put(b"k", None),)),
            "step",
        ),
    )
)
def test_sweeps_interrupted_by_appends_never_lose_or_resurrect_values(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_in_memory(scenario, monkeypatch)


@settings(max_examples=25)
@given(
    scenario=st.one_of(
        delete_scenarios(), compact_scenarios(), compact_delete_scenarios(), interrupted_scenarios()
    )
)
def test_the_same_holds_on_a_database_file(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'conveyor.db'}?retention_interval=86400"
        run_on(url, scenario, monkeypatch)


def test_a_pass_ends_when_partitions_finish_their_sweeps_out_of_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Partition 0's sweep takes three steps, then two once its start moves past the
    compacted record 0; partition 1's takes two. A pass must still end, rather than each
    partition starting a new sweep whenever the other is halfway through one."""
    scenario = Scenario(
        TopicConfig(retention=RETENTION, cleanup_policy=CleanupPolicy.COMPACT_DELETE),
        1,
        (
            Append(
                (
                    Put(0, AGED, b"a", b"1"),
                    Put(0, AGED, b"b", b"x"),
                    Put(0, AGED, b"a", b"2"),
                    Put(1, AGED, b"c", b"y"),
                    Put(1, AGED, b"d", b"z"),
                )
            ),
            "enforce",
        ),
    )
    run_in_memory(scenario, monkeypatch)
