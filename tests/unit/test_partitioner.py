"""Kafka-compatible partitioning: Kafka's own murmur2 vectors, a reference, and properties."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.errors import ConfigError, PartitionNotFound
from conveyor.partitioner import (
    RoundRobinPartitioner,
    StickyPartitioner,
    murmur2,
    partition_for_key,
)

# Apache Kafka, clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java,
# testMurmur2 (the values Utils.murmur2 must return, as signed Java ints).
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def reference_murmur2(data: bytes) -> int:
    """Utils.murmur2 transcribed a byte at a time, with Java's 32-bit wrap made explicit."""

    def wrap(n: int) -> int:
        return n & 0xFFFFFFFF

    m = 0x5BD1E995
    h = wrap(0x9747B28C ^ len(data))
    whole = len(data) - len(data) % 4
    for i in range(0, whole, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = wrap(k * m)
        k ^= k >> 24  # Java's >>> on the unsigned value
        k = wrap(k * m)
        h = wrap(h * m)
        h ^= k
    rest = len(data) % 4
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = wrap(h * m)
    h ^= h >> 13
    h = wrap(h * m)
    h ^= h >> 15
    return h - 2**32 if h >= 2**31 else h


@pytest.mark.parametrize(("data", "expected"), KAFKA_VECTORS.items())
def test_murmur2_matches_kafkas_test_vectors(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected
    assert reference_murmur2(data) == expected  # and so does the reference below


@given(st.binary(max_size=300))
def test_murmur2_agrees_with_the_byte_at_a_time_reference(data: bytes) -> None:
    assert murmur2(data) == reference_murmur2(data)


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 5, 6, 7, 8, 1000, 1027])
def test_every_tail_length_and_long_keys(length: int) -> None:
    data = random.Random(length).randbytes(length)
    assert murmur2(data) == reference_murmur2(data)


@given(st.binary(max_size=64))
def test_murmur2_is_a_signed_32_bit_int(data: bytes) -> None:
    assert -(2**31) <= murmur2(data) < 2**31


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=10_000))
def test_partitions_are_in_range_and_follow_kafkas_formula(key: bytes, partitions: int) -> None:
    partition = partition_for_key(key, partitions)
    assert 0 <= partition < partitions
    assert partition == (reference_murmur2(key) & 0x7FFFFFFF) % partitions


def test_the_sign_bit_is_masked_not_negated() -> None:
    # b"21" hashes negative: abs() would give 973932308 % 10 == 8, Kafka's toPositive gives 0
    assert partition_for_key(b"21", 10) == (-973932308 & 0x7FFFFFFF) % 10 == 0
    assert partition_for_key(b"21", 1) == 0


def test_cached_answers_are_the_computed_ones() -> None:
    key = b"user-42"
    fresh = (murmur2(key) & 0x7FFFFFFF) % 12
    assert [partition_for_key(key, 12) for _ in range(3)] == [fresh] * 3
    assert partition_for_key(bytes(bytearray(key)), 12) == fresh  # an equal key, not the same


@pytest.mark.parametrize("partitions", [0, -1])
def test_fewer_than_one_partition_is_a_config_error(partitions: int) -> None:
    with pytest.raises(ConfigError, match="at least 1 partition"):
        partition_for_key(b"k", partitions)
    with pytest.raises(ConfigError):
        StickyPartitioner().partition(partitions)
    with pytest.raises(ConfigError):
        StickyPartitioner().next_batch(partitions)
    with pytest.raises(ConfigError):
        RoundRobinPartitioner().partition(partitions)


def test_aiokafkas_default_partitioner_agrees_on_random_keys() -> None:
    partitioner = pytest.importorskip(
        "aiokafka.partitioner", reason="aiokafka not installed: no cross-check against it"
    )
    rng = random.Random(2024)
    keys = [rng.randbytes(rng.randrange(0, 40)) for _ in range(10_000)]
    default = partitioner.DefaultPartitioner()
    for partitions in (1, 2, 3, 7, 12, 100, 1024):
        every = list(range(partitions))
        for key in keys:
            assert partition_for_key(key, partitions) == default(key, every, every), key


# -- keyless records -------------------------------------------------------------------------


def test_sticky_keeps_one_partition_until_the_next_batch() -> None:
    sticky = StickyPartitioner(random.Random(7))
    first = sticky.partition(6)
    assert {sticky.partition(6) for _ in range(50)} == {first}
    sticky.next_batch(6)
    second = sticky.partition(6)
    assert second != first
    assert {sticky.partition(6) for _ in range(50)} == {second}


@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=2, max_value=50))
def test_each_new_batch_moves_to_another_partition_in_range(seed: int, partitions: int) -> None:
    sticky = StickyPartitioner(random.Random(seed))
    previous = sticky.partition(partitions)
    for _ in range(20):
        sticky.next_batch(partitions)
        current = sticky.partition(partitions)
        assert 0 <= current < partitions
        assert current != previous
        previous = current


def test_next_batch_spreads_over_every_other_partition() -> None:
    sticky = StickyPartitioner(random.Random(3))
    seen = set()
    for _ in range(400):
        sticky.next_batch(5)
        seen.add(sticky.partition(5))
    assert seen == {0, 1, 2, 3, 4}


def test_sticky_with_one_partition_stays_on_it() -> None:
    sticky = StickyPartitioner(random.Random(1))
    assert sticky.partition(1) == 0
    sticky.next_batch(1)
    assert sticky.partition(1) == 0


def test_sticky_chooses_again_when_the_topic_is_resized() -> None:
    picks = set()
    for seed in range(30):
        sticky = StickyPartitioner(random.Random(seed))
        sticky.partition(2)
        grown = sticky.partition(100)
        assert sticky.partition(100) == grown  # sticky again at the new size
        picks.add(grown)
    # partitions the 2-partition topic did not have: chosen afresh, not carried over
    assert max(picks) >= 2


def test_next_batch_before_any_partition_or_after_shrinking_picks_any() -> None:
    fresh = StickyPartitioner(random.Random(5))
    fresh.next_batch(4)
    assert 0 <= fresh.partition(4) < 4
    shrunk = StickyPartitioner(random.Random(5))
    while shrunk.partition(10) < 5:  # get a partition that no longer exists after shrinking
        shrunk.next_batch(10)
    shrunk.next_batch(3)
    assert 0 <= shrunk.partition(3) < 3


def test_sticky_without_an_rng_still_works() -> None:
    sticky = StickyPartitioner()
    assert 0 <= sticky.partition(8) < 8


def test_round_robin_cycles_through_every_partition() -> None:
    robin = RoundRobinPartitioner()
    assert [robin.partition(3) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_round_robin_carries_on_after_a_resize() -> None:
    robin = RoundRobinPartitioner()
    assert [robin.partition(4) for _ in range(3)] == [0, 1, 2]
    assert [robin.partition(2) for _ in range(3)] == [1, 0, 1]


@dataclass
class Placed:
    partition: int | None = None
    key: bytes | None = None


def test_place_honours_a_chosen_partition_then_the_key_then_sticks_for_one_call() -> None:
    sticky = StickyPartitioner(random.Random(7))
    records = [Placed(partition=2), Placed(key=b"k"), Placed(), Placed()]
    first = sticky.place("t", records, 3)
    assert first[0] == 2
    assert first[1] == partition_for_key(b"k", 3)
    assert first[2] == first[3]
    assert sticky.place("t", [Placed()], 3) != [first[2]]


def test_place_refuses_a_partition_the_topic_does_not_have() -> None:
    with pytest.raises(PartitionNotFound):
        StickyPartitioner().place("t", [Placed(partition=3)], 3)
