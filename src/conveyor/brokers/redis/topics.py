"""Topics on Redis Streams: the Broker's streams methods for ``RedisBroker``.

```
{prefix}topics               hash    topic name -> {"partitions", "config"} as JSON
{prefix}log:{topic}:{n}      stream  partition n; the record at offset o has entry ID (o+1)-0
{prefix}offsets:{topic}      hash    per partition n: e{n} log end, s{n} log start, b{n} bytes
{prefix}producers            hash    idempotent producer id -> its last call's placements
{prefix}appended:{topic}     channel told of each append, to wake fetchers
```

Entry IDs are the offsets, so reading from an offset is one XRANGE, and retention is an
exact XTRIM MINID. A record's fields are readable with XRANGE: ``timestamp`` (ms),
``size``, and ``key``, ``value``, ``headers`` (JSON) where the record has them; a
tombstone has no ``value``. Compaction is not offered: Redis has nothing that keeps the
latest entry per key, and emulating it would be a scan of every partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import WatchError

from conveyor.brokers.capabilities import Capability
from conveyor.brokers.redis import scripts
from conveyor.brokers.redis.connection import answer
from conveyor.brokers.redis.scripts import Call
from conveyor.brokers.retention_timer import RetentionTimer
from conveyor.brokers.stream_types import (
    OffsetCommit,
    PartitionInfo,
    ProducerBatch,
    ProducerRecord,
    Record,
    RecordMetadata,
    RetentionReport,
    TopicConfig,
    TopicInfo,
    TopicPartition,
    TopicSpec,
    check_max_records,
    check_offset_at,
)
from conveyor.brokers.types import as_float, seconds
from conveyor.errors import (
    ConfigError,
    DecodeError,
    OffsetOutOfRange,
    SequenceError,
    TopicNotFound,
)
from conveyor.partitioner import StickyPartitioner

if TYPE_CHECKING:
    from conveyor.brokers.redis.broker import RedisConnection

RETENTION_STEP = 5_000
"""Records one retention script removes: a script holds the server while it runs."""
SCAN_STEP = 10_000
"""Records one script looks at when finding an offset by time."""
PRODUCER_EXPIRY_MS = 7 * 86_400_000
NO_HEADERS: Mapping[str, str] = {}


class TopicKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.topics = f"{prefix}topics"
        self.producers = f"{prefix}producers"

    def log_prefix(self, topic: str) -> str:
        return f"{self.prefix}log:{topic}:"

    def log(self, topic: str, partition: int) -> str:
        return f"{self.prefix}log:{topic}:{partition}"

    def offsets(self, topic: str) -> str:
        return f"{self.prefix}offsets:{topic}"

    def appended(self, topic: str) -> str:
        return f"{self.prefix}appended:{topic}"


def encode_topic(spec: TopicSpec) -> str:
    return json.dumps({"partitions": spec.partitions, "config": spec.config.to_json()})


def decode_topic(name: str, text: str) -> TopicSpec:
    stored = json.loads(text)
    return TopicSpec(name, stored["partitions"], TopicConfig.from_json(stored["config"]))


def entry_id(offset: int) -> str:
    return f"{offset + 1}-0"


def entry_offset(entry: bytes | str) -> int:
    text = entry.decode() if isinstance(entry, bytes) else entry
    return int(text.partition("-")[0]) - 1


def _record(topic: str, partition: int, entry: bytes, fields: Mapping[bytes, bytes]) -> Record:
    headers = fields.get(b"headers")
    try:
        decoded = NO_HEADERS if headers is None else json.loads(headers)
    except ValueError as exc:
        raise DecodeError(f"record headers are not JSON ({exc})") from exc
    return Record(
        topic,
        partition,
        entry_offset(entry),
        int(fields[b"timestamp"]) / 1000,
        fields.get(b"key"),
        fields.get(b"value"),
        decoded,
    )


def _append_args(
    spec: TopicSpec, records: Sequence[ProducerRecord], placed: Sequence[int], sizes: Sequence[int]
) -> list[str | bytes]:
    args: list[str | bytes] = []
    for record, partition, size in zip(records, placed, sizes, strict=True):
        timestamp = "" if record.timestamp is None else str(round(record.timestamp * 1000))
        args += [
            str(partition),
            timestamp,
            str(size),
            "0" if record.key is None else "1",
            record.key or b"",
            "0" if record.value is None else "1",
            record.value or b"",
            json.dumps(dict(record.headers)) if record.headers else "",
        ]
    return args


class RedisTopics:
    """Topics, records, offsets and retention, on Redis Streams."""

    _retention_timer: RetentionTimer | None = None
    _sticky_partitioner: StickyPartitioner | None = None

    if TYPE_CHECKING:  # RedisBroker has them

        def _running(self) -> RedisConnection: ...

        def require(self, *needed: Capability) -> None: ...

        async def _commit(self, commit: OffsetCommit, append: Call | None) -> Any: ...

        async def _forget_topic(self, name: str) -> None: ...

    @property
    def _topic_keys(self) -> TopicKeys:
        return TopicKeys(self._running().prefix)

    async def _spec(self, name: str) -> TopicSpec:
        connection = self._running()
        with connection.endpoint.errors():
            text = await answer(connection.text.hget(self._topic_keys.topics, name))
        if text is None:
            raise TopicNotFound(name)
        return decode_topic(name, text)

    def _refuse_compaction(self, spec: TopicSpec) -> None:
        if spec.config.compacted:
            self.require(Capability.COMPACTION)

    async def create_topic(self, spec: TopicSpec) -> None:
        self._refuse_compaction(spec)
        connection, keys = self._running(), self._topic_keys
        with connection.endpoint.errors():
            created = await answer(
                connection.text.hsetnx(keys.topics, spec.name, encode_topic(spec))
            )
        if created:
            return
        existing = await self._spec(spec.name)
        if existing != spec:
            raise ConfigError(
                f"topic {spec.name!r} exists with {existing.partitions} partitions and "
                f"config {existing.config.to_json()}; use alter_topic to change it, or "
                "delete_topic first"
            )

    async def delete_topic(self, name: str) -> None:
        spec = await self._spec(name)
        connection, keys = self._running(), self._topic_keys
        with connection.endpoint.errors():
            async with connection.text.pipeline(transaction=True) as pipeline:
                pipeline.hdel(keys.topics, name)
                pipeline.delete(keys.offsets(name))
                for partition in range(spec.partitions):
                    pipeline.delete(keys.log(name, partition))
                await pipeline.execute()
        await self._forget_topic(name)

    async def list_topics(self) -> list[TopicSpec]:
        connection = self._running()
        with connection.endpoint.errors():
            stored = await answer(connection.text.hgetall(self._topic_keys.topics))
        return sorted((decode_topic(n, t) for n, t in stored.items()), key=lambda s: s.name)

    async def describe_topic(self, name: str) -> TopicInfo:
        spec = await self._spec(name)
        connection, keys = self._running(), self._topic_keys
        with connection.endpoint.errors():
            async with connection.text.pipeline(transaction=True) as pipeline:
                pipeline.hgetall(keys.offsets(name))
                for partition in range(spec.partitions):
                    pipeline.xlen(keys.log(name, partition))
                offsets, *lengths = await pipeline.execute()
        partitions = []
        for partition, length in enumerate(lengths):
            end = int(offsets.get(f"e{partition}", 0))
            start = int(offsets.get(f"s{partition}", 0))
            size = int(offsets.get(f"b{partition}", 0))
            partitions.append(PartitionInfo(partition, start, end, length, size))
        return TopicInfo(spec, tuple(partitions))

    async def alter_topic(
        self, name: str, *, partitions: int | None = None, config: TopicConfig | None = None
    ) -> TopicSpec:
        connection, keys = self._running(), self._topic_keys
        while True:
            with connection.endpoint.errors():
                async with connection.text.pipeline(transaction=True) as pipeline:
                    try:
                        await pipeline.watch(keys.topics)
                        text = await answer(pipeline.hget(keys.topics, name))
                        if text is None:
                            raise TopicNotFound(name)
                        current = decode_topic(name, text)
                        count = current.partitions if partitions is None else partitions
                        if count < current.partitions:
                            raise ConfigError(
                                f"topic {name!r} has {current.partitions} partitions; a topic "
                                "can only grow (fewer partitions would move keys and lose "
                                "records)"
                            )
                        spec = TopicSpec(name, count, config or current.config)
                        self._refuse_compaction(spec)
                        pipeline.multi()  # type: ignore[no-untyped-call]
                        pipeline.hset(keys.topics, name, encode_topic(spec))
                        await pipeline.execute()
                        return spec
                    except WatchError:
                        continue

    # records

    async def _produce(
        self,
        topic: str,
        records: Sequence[ProducerRecord],
        *,
        batch: ProducerBatch | None,
        commit: OffsetCommit | None,
    ) -> list[RecordMetadata]:
        spec = await self._spec(topic)
        sizes = spec.check_records(records)
        if self._sticky_partitioner is None:
            self._sticky_partitioner = StickyPartitioner()
        placed = self._sticky_partitioner.place(topic, records, spec.partitions)
        keys, connection = self._topic_keys, self._running()
        append = Call(
            scripts.TOPIC_APPEND,
            [keys.topics, keys.offsets(topic), keys.producers],
            [
                topic,
                keys.log_prefix(topic),
                "" if batch is None else batch.producer_id,
                "0" if batch is None else str(batch.sequence),
                keys.appended(topic),
                *_append_args(spec, records, placed, sizes),
            ],
        )
        if commit is None:
            if not records and batch is None:
                return []
            reply = await connection.run(append)
        else:
            reply = await self._commit(commit, append)
        self._schedule_retention()
        return _placements(topic, batch, reply)

    async def fetch(
        self,
        positions: Mapping[TopicPartition, int],
        *,
        max_records: int = 500,
        wait: float = 0.0,
    ) -> list[Record]:
        check_max_records(max_records)
        waiting = seconds(wait, "wait") or 0.0
        deadline = time.monotonic() + waiting
        records = await self._read(positions, max_records)
        if records or not positions or not waiting:
            return records
        connection, keys = self._running(), self._topic_keys
        waker = asyncio.Event()
        with connection.endpoint.errors():
            async with contextlib.AsyncExitStack() as stack:
                for topic in {topic for topic, _ in positions}:
                    channel = keys.appended(topic)
                    watch = await stack.enter_async_context(
                        connection.watcher.watching(channel, waiting, waker)
                    )
                while True:
                    records = await self._read(positions, max_records)
                    remaining = deadline - time.monotonic()
                    if records or remaining <= 0:
                        return records
                    await watch.wait(remaining)

    async def _read(
        self, positions: Mapping[TopicPartition, int], max_records: int
    ) -> list[Record]:
        """Records from each position on, at most ``max_records`` in all."""
        specs: dict[str, TopicSpec] = {}
        for topic, partition in positions:
            if topic not in specs:
                specs[topic] = await self._spec(topic)
            specs[topic].check_partition(partition)
        connection, keys = self._running(), self._topic_keys
        with connection.endpoint.errors():
            async with connection.raw.pipeline(transaction=True) as pipeline:
                for (topic, partition), offset in positions.items():
                    pipeline.hmget(keys.offsets(topic), [f"s{partition}", f"e{partition}"])
                    pipeline.xrange(
                        keys.log(topic, partition), min=entry_id(offset), count=max_records
                    )
                replies = await pipeline.execute()
        found: list[Record] = []
        for index, ((topic, partition), offset) in enumerate(positions.items()):
            (start, end), entries = replies[2 * index], replies[2 * index + 1]
            start, end = int(start or 0), int(end or 0)
            if not start <= offset <= end:
                raise OffsetOutOfRange(topic, partition, offset, start, end)
            room = max_records - len(found)
            found.extend(_record(topic, partition, e, fields) for e, fields in entries[:room])
        return found

    async def list_offsets(
        self, partitions: Sequence[TopicPartition], *, at: str | float = "latest"
    ) -> dict[TopicPartition, int]:
        check_offset_at(at)
        connection, keys = self._running(), self._topic_keys
        result: dict[TopicPartition, int] = {}
        for topic, partition in partitions:
            (await self._spec(topic)).check_partition(partition)
            with connection.endpoint.errors():
                start, end = await answer(
                    connection.text.hmget(keys.offsets(topic), [f"s{partition}", f"e{partition}"])
                )
            start, end = int(start or 0), int(end or 0)
            if at == "earliest":
                offset = start
            elif at == "latest":
                offset = end
            else:
                offset = await self._offset_at(topic, partition, start, end, float(at))
            result[TopicPartition(topic, partition)] = offset
        return result

    async def _offset_at(
        self, topic: str, partition: int, start: int, end: int, when: float
    ) -> int:
        connection, log = self._running(), self._topic_keys.log(topic, partition)
        offset = start
        while True:
            reply = await connection.run(
                Call(
                    scripts.TOPIC_OFFSET_AT,
                    [log],
                    [str(offset), str(int(when * 1000)), str(SCAN_STEP)],
                )
            )
            if reply[0] == 1:
                return int(reply[1])
            if reply[0] == -1:
                return end
            offset = int(reply[1])

    # retention

    async def enforce_retention(self, topic: str | None = None) -> RetentionReport:
        specs = [await self._spec(topic)] if topic is not None else await self.list_topics()
        connection, keys = self._running(), self._topic_keys
        deleted = 0
        for spec in specs:
            retention = as_float(spec.config.retention)
            limit = spec.config.retention_bytes
            for partition in range(spec.partitions):
                more = True
                while more:
                    now_ms = await self._server_ms()
                    cutoff = "" if retention is None else str(now_ms - int(retention * 1000))
                    removed, more = await connection.run(
                        Call(
                            scripts.TOPIC_TRIM,
                            [keys.log(spec.name, partition), keys.offsets(spec.name)],
                            [
                                str(partition),
                                cutoff,
                                "" if limit is None else str(limit),
                                str(RETENTION_STEP),
                            ],
                        )
                    )
                    deleted += removed
        await self._expire_producers()
        return RetentionReport(deleted=deleted)

    async def _server_ms(self) -> int:
        connection = self._running()
        with connection.endpoint.errors():
            seconds_, micros = await answer(connection.text.time())
        return int(seconds_) * 1000 + int(micros) // 1000

    async def _expire_producers(self) -> None:
        connection, keys = self._running(), self._topic_keys
        before = await self._server_ms() - PRODUCER_EXPIRY_MS
        with connection.endpoint.errors():
            async for producer, state in connection.text.hscan_iter(keys.producers):
                if json.loads(state)["at"] < before:
                    await answer(connection.text.hdel(keys.producers, producer))

    def _schedule_retention(self) -> None:
        if self._retention_timer is None:
            interval = self._running().endpoint.options.retention_interval
            self._retention_timer = RetentionTimer(interval, self.enforce_retention)
        self._retention_timer.appended()

    async def _stop_retention(self) -> None:
        if self._retention_timer is not None:
            await self._retention_timer.stop()


def _placements(
    topic: str, batch: ProducerBatch | None, reply: Sequence[Any]
) -> list[RecordMetadata]:
    outcome = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
    if outcome == "gone":
        raise TopicNotFound(topic)
    if outcome == "sequence":
        assert batch is not None
        raise SequenceError(batch.producer_id, int(reply[1]), batch.sequence)
    placed = json.loads(reply[1])
    if not isinstance(placed, list):  # cjson writes an empty array as {}
        return []
    return [RecordMetadata(topic, int(p), int(o), t / 1000) for p, o, t in placed]
