"""Appending records with confluent-kafka's Producer, from asyncio.

confluent's own ``AIOProducer`` refuses headers in batch mode, so the plain Producer is
used: records go in from the event loop (``produce`` only queues them), and one thread of
our own calls ``poll``, which runs the delivery callbacks; the last callback of a call
resolves that call's future on the loop through ``call_soon_threadsafe``.

Keys pick partitions here, with Conveyor's murmur2 partitioner, rather than in librdkafka
(whose default hashes keys differently from the Java client): a keyed record lands where
the Java client and the embedded engine put it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from conveyor.brokers.stream_types import ProducerRecord, RecordMetadata
from conveyor.errors import BrokerError, BrokerUnavailable, MessageTooLarge
from conveyor.partitioner import StickyPartitioner

POLL_INTERVAL_S = 0.05
TOO_LARGE = (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE)


class DeliveryBatch:
    """The outcome of one ``produce`` call, filled in by delivery callbacks."""

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[list[RecordMetadata]] = loop.create_future()
        self.metadata: list[RecordMetadata | None] = [None] * count
        self.remaining = count
        self.error: KafkaError | None = None

    def callback(self, index: int) -> Callable[[KafkaError | None, Message], None]:
        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None and (self.error is None or _purged(self.error)):
                self.error = error  # the cause, rather than a purge it led to
            else:
                _, timestamp_ms = message.timestamp()
                self.metadata[index] = RecordMetadata(
                    message.topic() or "",
                    message.partition() or 0,
                    message.offset() or 0,
                    timestamp_ms / 1000,
                )
            self.remaining -= 1
            if self.remaining == 0:
                self.loop.call_soon_threadsafe(self._finish)

        return delivered

    def _finish(self) -> None:
        if self.future.done():
            return
        if self.error is not None:
            self.future.set_exception(delivery_error(self.error))
        else:
            self.future.set_result([m for m in self.metadata if m is not None])


def _purged(error: KafkaError) -> bool:
    return error.code() in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)


def delivery_error(error: KafkaError) -> Exception:
    if error.code() in TOO_LARGE:
        return MessageTooLarge(-1, -1)
    if error.code() in (KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT):
        return BrokerUnavailable(f"kafka: a record was not acknowledged: {error.str()}")
    return BrokerError(f"kafka: {error.name()}: {error.str()}")


class RecordProducer:
    """One Producer and the thread that polls it, for the broker's lifetime."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._sticky = StickyPartitioner()
        self._running = True
        self._thread = threading.Thread(target=self._poll, name="conveyor-kafka-producer")
        self._thread.daemon = True
        self._thread.start()

    def _poll(self) -> None:
        while self._running:
            self._producer.poll(POLL_INTERVAL_S)

    async def produce(
        self, topic: str, records: Sequence[ProducerRecord], partitions: int
    ) -> list[RecordMetadata]:
        if not records:
            return []
        chosen = self._sticky.place(topic, records, partitions)
        batch = DeliveryBatch(asyncio.get_running_loop(), len(records))
        for index, (record, partition) in enumerate(zip(records, chosen, strict=True)):
            headers: list[tuple[str, str | bytes | None]] = [
                (k, v.encode()) for k, v in (record.headers or {}).items()
            ]
            timestamp = 0 if record.timestamp is None else round(record.timestamp * 1000)
            while True:
                try:
                    self._producer.produce(
                        topic,
                        record.value,
                        record.key,
                        partition=partition,
                        on_delivery=batch.callback(index),
                        timestamp=timestamp,
                        headers=headers,
                    )
                    break
                except BufferError:
                    await asyncio.sleep(POLL_INTERVAL_S)
        return await batch.future

    async def close(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        await asyncio.to_thread(self._producer.flush, max(deadline - time.monotonic(), 0))
        self._running = False
        await asyncio.to_thread(self._thread.join)
