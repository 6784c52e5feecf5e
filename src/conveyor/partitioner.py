"""Which partition a record goes to, the way Kafka's Java producer decides. Pure: no I/O.

Keyed records are hashed with Kafka's murmur2 so that a key lands on the same partition as
it would from any Kafka client that follows the Java one (librdkafka's ``murmur2_random``,
franz-go, aiokafka...): mixed producers keep per-key order. Records without a key stick to
one partition for a whole batch (Kafka's sticky partitioning), which makes fewer, fuller
batches than spreading single records round-robin.

The randomness comes in as a ``random.Random`` so that tests can fix the seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from functools import lru_cache
from struct import Struct
from typing import Any, Protocol

from conveyor.errors import ConfigError, PartitionNotFound

_SEED = 0x9747B28C
_M = 0x5BD1E995  # the mixing multiplier; r = 24 is written inline below
_MASK = 0xFFFFFFFF  # Java ints wrap at 32 bits; Python ints do not, so every product is masked
_SIGN = 0x80000000


@lru_cache(maxsize=256)
def _blocks(count: int) -> Callable[[bytes], tuple[Any, ...]]:
    """An unpacker for ``count`` little-endian 4-byte words, compiled once per key length.

    Unpacking every whole block in one C call is what makes the pure-Python hash fast.
    """
    return Struct(f"<{count}I").unpack_from


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2``: the signed 32-bit hash the Java client computes for a key.

    Identical to the Java code bit for bit. The tail (the last ``len % 4`` bytes) is read as
    one little-endian integer, which is exactly what Java's fall-through ``switch`` XORs in.
    """
    length = len(data)
    h = _SEED ^ length
    m = _M
    mask = _MASK
    for k in _blocks(length >> 2)(data):
        k = k * m & mask
        k = (k ^ (k >> 24)) * m & mask
        h = (h * m ^ k) & mask
    if length & 3:
        h = (h ^ int.from_bytes(data[length & ~3 :], "little")) * m & mask
    h ^= h >> 13
    h = h * m & mask
    h ^= h >> 15
    return h - ((h & _SIGN) << 1)


def _check_partitions(partitions: int) -> None:
    if partitions < 1:
        raise ConfigError(
            f"a topic needs at least 1 partition, not {partitions!r}; create the topic with "
            "one or more partitions (or wait for its metadata) before producing to it"
        )


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition, in ``range(partitions)``, that Kafka's default partitioner picks for ``key``.

    ``toPositive(murmur2(key)) % partitions``: the sign bit is masked off rather than using
    ``abs``, as Kafka does, so that ``Integer.MIN_VALUE`` cannot come out negative. Results are
    cached for the last few thousand (key, partitions) pairs because real workloads repeat
    keys (a user id, an order id) far more often than they invent them.

    Raises:
        ConfigError: ``partitions`` is below 1.
    """
    _check_partitions(partitions)
    return _cached_partition(key, partitions)


@lru_cache(maxsize=8192)
def _cached_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Placeable(Protocol):
    """A record to place: a partition chosen by hand, or a key, or neither."""

    @property
    def partition(self) -> int | None: ...

    @property
    def key(self) -> bytes | None: ...


class StickyPartitioner:
    """Partitions for records without a key: one partition per batch, then a different one.

    Kafka sends keyless records to one partition until the batch there is sent, then moves
    on, so batches fill up instead of every partition getting a thin slice of each burst.
    Call :meth:`partition` for each record and :meth:`next_batch` when a batch is sent.
    """

    __slots__ = ("_current", "_partitions", "_rng")

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._current: int | None = None
        self._partitions = 0

    def partition(self, partitions: int) -> int:
        """The current sticky partition; a random one first, or when the topic was resized.

        Raises:
            ConfigError: ``partitions`` is below 1.
        """
        _check_partitions(partitions)
        if self._current is None or partitions != self._partitions:
            self._current = self._rng.randrange(partitions)
            self._partitions = partitions
        return self._current

    def place(self, topic: str, records: Sequence[Placeable], partitions: int) -> list[int]:
        """Each record's partition (its own, its key's, or the sticky one); one call is one
        batch, so the next call sticks to another partition.

        Raises:
            PartitionNotFound: a record names a partition the topic does not have.
        """
        placed = []
        for record in records:
            if record.partition is not None:
                if not 0 <= record.partition < partitions:
                    raise PartitionNotFound(topic, record.partition, partitions)
                placed.append(record.partition)
            elif record.key is not None:
                placed.append(partition_for_key(record.key, partitions))
            else:
                placed.append(self.partition(partitions))
        self.next_batch(partitions)
        return placed

    def next_batch(self, partitions: int) -> None:
        """Move to another partition, chosen at random among the others (if there are any).

        Raises:
            ConfigError: ``partitions`` is below 1.
        """
        _check_partitions(partitions)
        current = self._current
        if partitions == 1:
            chosen = 0
        elif current is None or current >= partitions:
            chosen = self._rng.randrange(partitions)
        else:
            # uniform over the partitions-1 others, in one draw instead of retrying
            chosen = self._rng.randrange(partitions - 1)
            if chosen >= current:
                chosen += 1
        self._current = chosen
        self._partitions = partitions


class RoundRobinPartitioner:
    """Partitions ``0, 1, ..., n-1, 0, ...`` in turn, whatever the key: an even spread."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def partition(self, partitions: int) -> int:
        """The next partition in turn; if the topic was resized, the turn carries on modulo.

        Raises:
            ConfigError: ``partitions`` is below 1.
        """
        _check_partitions(partitions)
        chosen = self._next % partitions
        self._next = chosen + 1
        return chosen
