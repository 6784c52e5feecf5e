"""Event handlers fed by a consumer group: ``@app.subscriber(topic, group=...)``.

A record is committed only after its handler succeeded (at-least-once). A failing handler
is retried in place with the subscriber's backoff, because later records of the partition
must wait for it to keep per-key order. When the retries run out, the record goes to the
dead-letter topic with where it came from and why it failed, and the partition moves on:
in the same transaction that commits past it where the broker has transactional produce
(the embedded engine, Kafka); on a broker without, produced first and committed with the
rest of the batch, so a crash between the two dead-letters it twice but never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conveyor.assignors import TopicPartition
from conveyor.brokers.base import Broker
from conveyor.brokers.capabilities import Capability
from conveyor.brokers.stream_types import OffsetCommit, ProducerRecord, Record, TopicSpec
from conveyor.errors import ConfigError, MemberFenced
from conveyor.events.consumer import OffsetReset, open_consumer
from conveyor.events.producer import Producer, ensure_topics
from conveyor.names import DEAD_LETTER_SUFFIX, check_name
from conveyor.retry import RetryPolicy

Handler = Callable[[Record], Any]


@dataclass(frozen=True, slots=True)
class SubscriberOptions:
    topic: str
    group: str
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    dead_letter_topic: str = ""
    auto_offset_reset: OffsetReset = "earliest"
    session_timeout: float = 10.0
    max_poll_records: int = 100

    def __post_init__(self) -> None:
        check_name("topic", self.topic)
        check_name("group", self.group)
        if not self.dead_letter_topic:
            object.__setattr__(self, "dead_letter_topic", f"{self.topic}{DEAD_LETTER_SUFFIX}")
        check_name("dead-letter topic", self.dead_letter_topic)


@dataclass(slots=True)
class SubscriberCounts:
    handled: int = 0
    retried: int = 0
    dead_lettered: int = 0


class Subscriber:
    """A registered handler and its options; ``run`` consumes until ``stopping`` is set."""

    def __init__(self, name: str, function: Handler, options: SubscriberOptions) -> None:
        if not callable(function):
            raise ConfigError(f"subscriber {name!r} must be a function, not {function!r}")
        self.name = name
        self.function = function
        self.options = options
        self.is_async = asyncio.iscoroutinefunction(function)

    def __repr__(self) -> str:
        return f"<Subscriber {self.name} on {self.options.topic} as {self.options.group}>"

    async def run(
        self, broker: Broker, stopping: asyncio.Event, *, auto_create_topics: bool = False
    ) -> SubscriberCounts:
        """Consume until ``stopping``; TopicNotFound if the topic is missing and may not be
        created."""
        if auto_create_topics:
            await ensure_topics(broker, [self.options.topic])
        return await _Run(self, broker, stopping).run()


class _Stopped(Exception):
    """The worker is stopping while a record waits for a retry: leave it uncommitted."""


class _Run:
    def __init__(self, subscriber: Subscriber, broker: Broker, stopping: asyncio.Event) -> None:
        self.subscriber = subscriber
        self.options = subscriber.options
        self.broker = broker
        self.stopping = stopping
        self.counts = SubscriberCounts()
        self.random = random.Random()
        self.producer = Producer(broker)
        self.consumer = open_consumer(
            broker,
            [self.options.topic],
            group=self.options.group,
            auto_offset_reset=self.options.auto_offset_reset,
            enable_auto_commit=False,
            session_timeout=self.options.session_timeout,
            max_poll_records=self.options.max_poll_records,
        )

    async def run(self) -> SubscriberCounts:
        await self.broker.create_topic(TopicSpec(self.options.dead_letter_topic))
        async with self.consumer:
            while not self.stopping.is_set():
                records = await self.consumer.poll(timeout=0.5)
                try:
                    await self._handle_all(records)
                except _Stopped:
                    break
        return self.counts

    async def _handle_all(self, records: list[Record]) -> None:
        done: dict[TopicPartition, int] = {}
        try:
            for record in records:
                if self.stopping.is_set():
                    raise _Stopped
                await self._handle(record)
                done[record.topic_partition] = record.offset + 1
        finally:
            with contextlib.suppress(MemberFenced):  # the new owner re-reads uncommitted ones
                await self.consumer.commit(done)

    async def _handle(self, record: Record) -> None:
        """Run the handler, retrying as the policy says, then dead-letter the record."""
        attempt = 1
        function = self.subscriber.function
        while True:
            try:
                if self.subscriber.is_async:
                    await function(record)
                else:
                    await asyncio.to_thread(function, record)
                self.counts.handled += 1
                return
            except Exception as error:
                decision = self.options.retry.decide(error, attempt, self.random)
                if not decision.retry:
                    await self._dead_letter(record, error, attempt)
                    return
            self.counts.retried += 1
            attempt += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(decision.delay):
                    await self.stopping.wait()
            if self.stopping.is_set():
                raise _Stopped

    async def _dead_letter(self, record: Record, error: Exception, attempts: int) -> None:
        headers = {
            **record.headers,
            "x-original-topic": record.topic,
            "x-original-partition": str(record.partition),
            "x-original-offset": str(record.offset),
            "x-original-timestamp": repr(record.timestamp),
            "x-group": self.options.group,
            "x-subscriber": self.subscriber.name,
            "x-attempts": str(attempts),
            "x-error-type": type(error).__qualname__,
            "x-error-message": str(error),
            "x-error-traceback": "".join(traceback.format_exception(error)),
            "x-failed-at": repr(time.time()),
        }
        if record.key is not None:
            headers["x-original-key"] = record.key.decode("utf-8", "backslashreplace")
        commit = None  # without transactions, _handle_all commits past it with the batch
        if Capability.TRANSACTIONAL_PRODUCE in self.broker.capabilities:
            member = self.consumer.membership
            commit = OffsetCommit(
                self.options.group,
                {record.topic_partition: record.offset + 1},
                member.member_id if member else None,
                member.generation if member else None,
            )
        with contextlib.suppress(MemberFenced):  # the partition moved: its new owner retries
            await self.producer.send_batch(
                self.options.dead_letter_topic,
                [ProducerRecord(record.value, record.key, headers)],
                commit=commit,
            )
            self.counts.dead_lettered += 1
