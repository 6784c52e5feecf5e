"""The kafka:// GroupConsumer: librdkafka's group consumer, driven from asyncio.

Kafka's brokers run the group protocol, so unlike CoordinatedConsumer this consumer never
calls the Broker's group calls: joining, heartbeats, rebalances and fencing are
librdkafka's. Its rebalance callbacks run inside ``consume`` on the consumer's thread; they
resolve where each new partition starts (the group's commit, else ``auto_offset_reset``)
so that ``position`` is known at once, and run ``on_revoke`` on the event loop before the
partitions go. Auto-commit is Conveyor's own, on the other backends' schedule (on a later
poll, on rebalance, on close), not librdkafka's timer, which would also commit records
that are still being processed when it fires.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import Future
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaPartition

from conveyor.brokers.group_consumer import GroupConsumer, OffsetReset, Revoked, check_options
from conveyor.brokers.kafka.admin import INTERNAL_GROUP, error_of
from conveyor.brokers.kafka.groups import GroupAdmin
from conveyor.brokers.kafka.reader import OUT_OF_RANGE, to_records
from conveyor.brokers.stream_types import Membership, Record, TopicPartition
from conveyor.errors import BrokerError, BrokerUnavailable, ConfigError, MemberFenced, NoOffset

SLICE_S = 0.05  # librdkafka's consume waits its whole timeout for a full batch: ask often
FETCH_SETTINGS = {
    "fetch.wait.max.ms": 100,
    # once librdkafka holds queued.min.messages (100,000) it stops fetching and looks
    # again after this long, 1 s by default: a consumer reading more records than that in
    # a second would sit idle for the rest of each second
    "fetch.queue.backoff.ms": 100,
}
FENCED = (
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.FENCED_INSTANCE_ID,
    KafkaError._ASSIGNMENT_LOST,
)
GONE = (
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
)
log = logging.getLogger("conveyor.kafka")
ASSIGNORS = ("range", "roundrobin")  # the eager ones, as on the other backends


class KafkaGroupConsumer(GroupConsumer):
    """Kafka's consumer; the options are CoordinatedConsumer's, with the same meaning.

    ``membership.generation`` counts this member's assignments (librdkafka does not expose
    the group's generation); fencing is checked by the brokers, not through it.
    """

    def __init__(
        self,
        config: dict[str, Any],
        groups: GroupAdmin,
        topics: Sequence[str] = (),
        *,
        assign: Iterable[tuple[str, int]] = (),
        group: str | None = None,
        auto_offset_reset: OffsetReset = "latest",
        enable_auto_commit: bool = True,
        auto_commit_interval: float = 5.0,
        session_timeout: float = 10.0,
        heartbeat_interval: float | None = None,
        max_poll_records: int = 500,
        assignor: str = "range",
        on_revoke: Revoked | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.topics = tuple(topics)
        self._manual = [TopicPartition(*tp) for tp in assign]
        check_options(self.topics, self._manual, group, auto_offset_reset)
        if assignor not in ASSIGNORS:
            raise ConfigError(f"assignor must be one of {', '.join(ASSIGNORS)}, not {assignor!r}")
        self.group = group
        self.auto_offset_reset = auto_offset_reset
        self.enable_auto_commit = enable_auto_commit and group is not None
        self.auto_commit_interval = auto_commit_interval
        self.max_poll_records = max_poll_records
        self.on_revoke = on_revoke
        self.membership: Membership | None = None
        self._groups = groups
        self._timeout = timeout
        heartbeat = heartbeat_interval or min(session_timeout / 3, 3.0)
        self._config = {
            **config,
            # without a group, librdkafka still needs a name: one no one else uses
            "group.id": group or f"{INTERNAL_GROUP}assigned-{secrets.token_hex(6)}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error" if auto_offset_reset == "none" else auto_offset_reset,
            "session.timeout.ms": round(session_timeout * 1000),
            "heartbeat.interval.ms": round(heartbeat * 1000),
            "partition.assignment.strategy": assignor,
            **FETCH_SETTINGS,
        }
        self._consumer: Consumer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = asyncio.Lock()  # one librdkafka call at a time, except from a callback
        self._state = threading.Lock()  # positions change on the consumer's thread
        self._positions: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._seeks: dict[TopicPartition, int] = {}
        self._buffer: list[Record] = []
        self._generation = 0
        self._reassignments = 0  # moves on every change of what this consumer holds
        self._in_rebalance = False
        self._calls: queue.Queue[tuple[Callable[[], None], Future[None]]] = queue.Queue()
        self._closing = False
        self._next_commit = time.monotonic() + auto_commit_interval

    # lifecycle

    async def start(self) -> None:
        """Join the group and wait for the first assignment (or take the assigned
        partitions), so that ``assignment`` and ``position`` answer at once.

        The group's other members hand partitions over from their own polls: keep them
        polling meanwhile (each member in a task of its own does).
        """
        if self._consumer is not None:
            return
        topics = self._groups.topics
        for topic in {tp.topic for tp in self._manual} | set(self.topics):
            await topics.partition_count(topic)  # TopicNotFound now, not in a poll
        await topics.check_partitions(self._manual)
        self._loop = asyncio.get_running_loop()
        self._closing = False
        consumer = self._consumer = Consumer(self._config)
        try:
            async with self._busy:
                if self._manual:
                    await asyncio.to_thread(self._assign_by_hand, consumer)
                else:
                    consumer.subscribe(
                        list(self.topics),
                        on_assign=self._assigned,
                        on_revoke=self._revoked,
                        on_lost=self._lost,
                    )
                    await asyncio.to_thread(self._wait_for_assignment, consumer)
        except BaseException:
            self._consumer = None
            await asyncio.to_thread(consumer.close)
            raise

    async def close(self) -> None:
        """Commit (with auto-commit) and leave the group, handing partitions over at once."""
        consumer = self._consumer
        if consumer is None or self._closing:
            return
        try:
            if self.enable_auto_commit:
                with contextlib.suppress(MemberFenced):  # the new owner re-reads its commit
                    await self.commit()
        finally:
            self._closing = True
            async with self._busy:
                await asyncio.to_thread(consumer.close)
            self._consumer = None
            self.membership = None

    def _assign_by_hand(self, consumer: Consumer) -> None:
        starts = self._starts(consumer, self._manual)
        consumer.assign([KafkaPartition(t, p, o) for (t, p), o in starts.items()])
        with self._state:
            self._positions.update(starts)

    def _wait_for_assignment(self, consumer: Consumer) -> None:
        deadline = time.monotonic() + self._timeout
        while self._generation == 0 and time.monotonic() < deadline:
            self._buffer += self._take(consumer.consume(self.max_poll_records, SLICE_S))

    # rebalance callbacks: on the consumer's thread, inside consume

    def _assigned(self, consumer: Consumer, partitions: list[KafkaPartition]) -> None:
        starts = self._starts(consumer, [TopicPartition(p.topic, p.partition) for p in partitions])
        consumer.assign([KafkaPartition(t, p, o) for (t, p), o in starts.items()])
        with self._state:
            self._positions = starts
            self._generation += 1
            self._reassignments += 1
        self._note_membership()

    def _revoked(self, consumer: Consumer, partitions: list[KafkaPartition]) -> None:
        revoked = [TopicPartition(p.topic, p.partition) for p in partitions]
        held = [tp for tp in revoked if tp in self._positions]
        if held and not self._closing:
            if self.on_revoke is not None:
                self._in_rebalance = True
                try:
                    self._run_on_loop(self._hand_over(self.on_revoke, held))
                finally:
                    self._in_rebalance = False
            elif self.enable_auto_commit:
                with contextlib.suppress(MemberFenced):  # the new owner reads the last commit
                    self._commit_now(consumer, {tp: self._positions[tp] for tp in held})
        self._drop(revoked)

    def _run_on_loop(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` on the event loop, doing here the librdkafka calls it asks for:
        from inside a rebalance callback, a commit made on any other thread never returns."""
        assert self._loop is not None
        done = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        while True:
            try:
                call, answer = self._calls.get(timeout=0.01)
            except queue.Empty:
                if done.done():
                    break
                continue
            try:
                answer.set_result(call())
            except BaseException as exc:
                answer.set_exception(exc)
        done.result()

    @staticmethod
    async def _hand_over(on_revoke: Revoked, partitions: list[TopicPartition]) -> None:
        await on_revoke(partitions)

    def _lost(self, consumer: Consumer, partitions: list[KafkaPartition]) -> None:
        self._drop([TopicPartition(p.topic, p.partition) for p in partitions])

    def _drop(self, partitions: Sequence[TopicPartition]) -> None:
        with self._state:
            for tp in partitions:
                self._positions.pop(tp, None)
                self._seeks.pop(tp, None)
                self._paused.discard(tp)
            self._buffer = [r for r in self._buffer if r.topic_partition in self._positions]
            self._reassignments += 1
        self._note_membership()

    def _note_membership(self) -> None:
        if self.group is None or self._consumer is None:
            return
        owned = tuple(sorted(self._positions))
        member_id = self._consumer.memberid() or ""
        self.membership = Membership(self.group, member_id, self._generation, owned, owned, ())

    def _starts(
        self, consumer: Consumer, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """Where each partition starts: the group's commit, else ``auto_offset_reset``."""
        if not partitions:
            return {}
        starts: dict[TopicPartition, int] = {}
        if self.group is not None:
            starts = self._committed_now(consumer, self.group, partitions)
        self._committed.update(starts)
        for tp in partitions:
            if tp not in starts:
                starts[tp] = self._reset(consumer, tp)
        return starts

    def _committed_now(
        self, consumer: Consumer, group: str, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """The group's commits, through the AdminClient's OffsetFetch (a consumer's own,
        ``committed()``, was seen to answer "no offset" for a committed one on noida-db),
        or through this consumer's own connection while the admin's is still coming back
        after the broker restarted."""
        try:
            return self._groups.committed_blocking(group, partitions)
        except BrokerUnavailable:
            asked = [KafkaPartition(t, p) for t, p in partitions]
            try:
                answers = consumer.committed(asked, timeout=self._timeout)
            except KafkaException as exc:
                raise error_of(exc) from exc
            return {
                TopicPartition(found.topic, found.partition): found.offset
                for found in answers
                if found.offset >= 0
            }

    def _reset(self, consumer: Consumer, tp: TopicPartition) -> int:
        if self.auto_offset_reset == "none":
            raise NoOffset(self.group or "(none)", tp.topic, tp.partition)
        low, high = consumer.get_watermark_offsets(KafkaPartition(*tp), timeout=self._timeout)
        return int(low if self.auto_offset_reset == "earliest" else high)

    # what this consumer reads

    def assignment(self) -> set[TopicPartition]:
        with self._state:
            return set(self._positions)

    def position(self, partition: tuple[str, int]) -> int:
        tp = TopicPartition(*partition)
        with self._state:
            if tp not in self._positions:
                raise ConfigError(f"{tp.topic}[{tp.partition}] is not assigned to this consumer")
            return self._seeks.get(tp, self._positions[tp])

    def seek(self, partition: tuple[str, int], offset: int) -> None:
        """Read ``partition`` from ``offset`` on the next poll."""
        self.position(partition)
        if offset < 0:
            raise ConfigError(f"offset must be >= 0, not {offset}")
        with self._state:
            self._seeks[TopicPartition(*partition)] = offset

    async def _seek_at(self, at: str | float, partitions: Sequence[tuple[str, int]]) -> None:
        chosen = [TopicPartition(*p) for p in partitions] or sorted(self.assignment())
        for tp in chosen:
            self.position(tp)
        consumer = self._started()
        async with self._busy:
            offsets = await asyncio.to_thread(self._offsets_at, consumer, chosen, at)
        for tp, offset in offsets.items():
            self.seek(tp, offset)

    def _offsets_at(
        self, consumer: Consumer, partitions: Sequence[TopicPartition], at: str | float
    ) -> dict[TopicPartition, int]:
        found: dict[TopicPartition, int] = {}
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(KafkaPartition(*tp), timeout=self._timeout)
            found[tp] = int(low if at == "earliest" else high)
        if isinstance(at, float):
            asked = [KafkaPartition(t, p, round(at * 1000)) for t, p in partitions]
            for answer in consumer.offsets_for_times(asked, timeout=self._timeout):
                if answer.offset >= 0:  # else no record that late: the end
                    found[TopicPartition(answer.topic, answer.partition)] = answer.offset
        return found

    def pause(self, *partitions: tuple[str, int]) -> None:
        """Stop fetching these partitions (membership and positions are kept)."""
        chosen = [TopicPartition(*p) for p in partitions]
        self._started().pause([KafkaPartition(*tp) for tp in chosen])
        with self._state:
            self._paused.update(chosen)
            self._buffer = [r for r in self._buffer if r.topic_partition not in self._paused]

    def resume(self, *partitions: tuple[str, int]) -> None:
        chosen = [TopicPartition(*p) for p in partitions]
        consumer = self._started()
        with self._state:
            for tp in chosen:
                if tp in self._paused and tp in self._positions:
                    # records dropped from the buffer at pause come again
                    self._seeks.setdefault(tp, self._positions[tp])
            self._paused.difference_update(chosen)
        consumer.resume([KafkaPartition(*tp) for tp in chosen])

    def paused(self) -> set[TopicPartition]:
        with self._state:
            return set(self._paused)

    def group_metadata(self) -> object:
        """This member's group metadata, which fences a transaction's offset commit."""
        return self._started().consumer_group_metadata()

    def _started(self) -> Consumer:
        if self._consumer is None:
            raise ConfigError("the consumer is not started: call start() or poll() first")
        return self._consumer

    # reading

    async def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[Record]:
        """Records from the assigned partitions, waiting up to ``timeout`` for the first.

        Positions move past what is returned; with auto-commit they are committed on a
        later poll, so a crash re-delivers at most what was polled since the last commit.

        What librdkafka has fetched already is taken on the event loop, without a hop to
        a thread (a quarter of the cost of a poll of 500). Rebalance callbacks may then run
        on the loop too, which is safe unless they need it: with ``on_revoke``, every poll
        goes through a thread.
        """
        await self.start()
        if self.enable_auto_commit and time.monotonic() >= self._next_commit:
            self._next_commit = time.monotonic() + self.auto_commit_interval
            with contextlib.suppress(MemberFenced):  # moved: the new owner reads the last commit
                await self.commit()
        consumer = self._started()
        limit = max_records or self.max_poll_records
        async with self._busy:
            if self.on_revoke is None and not self._seeks and not self._buffer:
                reassignments = self._reassignments
                ready = self._take(consumer.consume(limit, 0))
                if ready:
                    with self._state:
                        if reassignments != self._reassignments:
                            return self._advance(ready)
                        self._catch_up(consumer)
                        return ready
            return await asyncio.to_thread(self._poll, consumer, timeout, limit)

    def _poll(self, consumer: Consumer, timeout: float, limit: int) -> list[Record]:
        deadline = time.monotonic() + timeout
        with self._state:
            seeks, self._seeks = self._seeks, {}
            records, self._buffer = self._buffer[:limit], self._buffer[limit:]
        for tp, offset in seeks.items():
            self._seek_now(consumer, tp, offset)
        while not records:
            remaining = deadline - time.monotonic()
            records = self._take(consumer.consume(limit, max(0.0, min(remaining, SLICE_S))))
            if remaining <= 0:
                break
        with self._state:
            return self._advance(records)

    def _advance(self, records: list[Record]) -> list[Record]:
        """Keep the records of partitions still held and move their positions past them.

        Records come in offset order per partition, so each partition's last one says
        where it is (plain (topic, partition) keys: equal to TopicPartition, and updating
        a key that is there keeps the key).
        """
        ends = {(record[0], record[1]): record[2] for record in records}
        positions = self._positions
        if any(tp not in positions for tp in ends):
            records = [r for r in records if (r[0], r[1]) in positions]
        for tp, offset in ends.items():
            if tp in positions:
                positions[tp] = offset + 1
        return records

    def _catch_up(self, consumer: Consumer) -> None:
        """Move each held partition's position to librdkafka's own: past the last record
        it handed out, every one of which the caller gets. One call, where ``_advance``
        costs a tenth of a poll's time in work per record."""
        held = [KafkaPartition(topic, partition) for topic, partition in self._positions]
        for found in consumer.position(held):
            if found.offset >= 0:
                self._positions[TopicPartition(found.topic, found.partition)] = found.offset

    def _seek_now(self, consumer: Consumer, tp: TopicPartition, offset: int) -> None:
        try:
            consumer.seek(KafkaPartition(tp.topic, tp.partition, offset))
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._STATE:
                raise error_of(exc, topic=tp.topic) from exc
            with self._state:  # not fetching yet (just assigned): assign again from there
                restart = {**self._positions, tp: offset}
            consumer.assign([KafkaPartition(t, p, o) for (t, p), o in restart.items()])
        with self._state:
            if tp in self._positions:
                self._positions[tp] = offset

    def _take(self, messages: list[Message]) -> list[Record]:
        records = to_records(messages)
        if len(records) < len(messages):
            self._check_errors(messages)
        return records

    def _check_errors(self, messages: list[Message]) -> None:
        """Raise what the application must act on; log what librdkafka recovers from."""
        for message in messages:
            error = message.error()
            if error is None:
                continue
            if error.code() in OUT_OF_RANGE and self.auto_offset_reset == "none":
                raise NoOffset(
                    self.group or "(none)", message.topic() or "", message.partition() or 0
                )
            elif error.fatal() or error.code() in GONE:
                raise BrokerError(f"kafka: consuming {message.topic()}: {error.str()}")
            elif error.code() != KafkaError._PARTITION_EOF:
                # a lost connection, a leader moving: librdkafka reconnects and goes on
                log.warning("kafka: consuming %s: %s (retrying)", message.topic(), error.str())

    # committing

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        """Store ``offsets`` (default: the current positions) as the group's progress.

        Raises MemberFenced if the brokers say this member lost the partitions (a rebalance
        went on without it); the new owner re-reads from the last good commit.
        """
        if self.group is None:
            raise ConfigError("committing needs a group; create the consumer with group=...")
        with self._state:
            chosen = dict(self._positions if offsets is None else offsets)
        chosen = {
            TopicPartition(*tp): o for tp, o in chosen.items() if self._committed.get(tp) != o
        }
        if not chosen or self._consumer is None:
            return
        consumer = self._consumer
        if self._in_rebalance:  # from on_revoke: the consumer's thread does it
            answer: Future[None] = Future()
            self._calls.put((functools.partial(self._commit_now, consumer, chosen), answer))
            await asyncio.wrap_future(answer)
            return
        async with self._busy:
            await asyncio.to_thread(self._commit_now, consumer, chosen)

    def _commit_now(self, consumer: Consumer, offsets: dict[TopicPartition, int]) -> None:
        asked = [KafkaPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            answers = consumer.commit(offsets=asked, asynchronous=False) or []
        except KafkaException as exc:
            errors = [exc.args[0]]
        else:
            errors = [answer.error for answer in answers if answer.error is not None]
        for error in errors:
            if error.code() != KafkaError._NO_OFFSET:
                raise self._commit_error(error)
        self._committed.update(offsets)

    def _commit_error(self, error: KafkaError) -> BrokerError:
        if error.code() in FENCED:
            member = self.membership.member_id if self.membership else "(assigned)"
            return MemberFenced(self.group or "", member, f"the brokers said {error.str()}")
        return BrokerError(f"kafka: committing for group {self.group!r}: {error.str()}")


__all__ = ["KafkaGroupConsumer"]
