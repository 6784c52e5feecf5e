"""Records and a group's offsets in one Kafka transaction: ``produce(..., commit=...)``.

Consume-transform-produce exactly once: the derived records and the offsets of what they
were derived from become visible together (to ``read_committed`` readers, librdkafka's
default and the one Conveyor's consumers use), or neither does. The offsets are fenced by
the group: a commit for a member is sent with that member's group metadata, so the
brokers refuse it once the member has lost its partitions. One transaction at a time per
broker object, on a producer of its own whose ``transactional.id`` is unique to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaPartition

from conveyor.brokers.kafka.group import FENCED
from conveyor.brokers.kafka.producer import RecordProducer
from conveyor.brokers.stream_types import ProducerRecord, RecordMetadata, TopicPartition
from conveyor.errors import BrokerError, MemberFenced


class TransactionalProducer(RecordProducer):
    def __init__(self, config: dict[str, Any], timeout: float) -> None:
        super().__init__({**config, "transactional.id": f"conveyor-{secrets.token_hex(8)}"})
        self._timeout = timeout
        self._initialized = False
        self._one_at_a_time = asyncio.Lock()

    async def produce_and_commit(
        self,
        topic: str,
        records: Sequence[ProducerRecord],
        partitions: int,
        group: str,
        offsets: Mapping[TopicPartition, int],
        group_metadata: object,
    ) -> list[RecordMetadata]:
        """Append ``records`` and commit ``offsets`` for ``group`` atomically; on any
        failure the transaction is aborted and the error raised (MemberFenced when the
        brokers fenced the member)."""
        producer = self._producer
        async with self._one_at_a_time:
            try:
                if not self._initialized:
                    await asyncio.to_thread(producer.init_transactions, self._timeout)
                    self._initialized = True
                producer.begin_transaction()
            except KafkaException as exc:
                raise _error(exc, group) from exc
            try:
                placed = await self.produce(topic, records, partitions)
                asked = [KafkaPartition(t, p, o) for (t, p), o in offsets.items()]
                await asyncio.to_thread(
                    producer.send_offsets_to_transaction, asked, group_metadata, self._timeout
                )
                await asyncio.to_thread(producer.commit_transaction, self._timeout)
            except BaseException as exc:
                with contextlib.suppress(KafkaException):
                    await asyncio.to_thread(producer.abort_transaction, self._timeout)
                if isinstance(exc, KafkaException):
                    raise _error(exc, group) from exc
                raise
            return placed


def _error(exc: KafkaException, group: str) -> BrokerError:
    error: KafkaError = exc.args[0]
    if error.code() in FENCED:
        return MemberFenced(group, "(transaction)", f"the brokers said {error.str()}")
    return BrokerError(f"kafka: transaction for group {group!r}: {error.str()}")
