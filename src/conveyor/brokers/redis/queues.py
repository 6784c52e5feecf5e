"""Queues on Redis Streams: the Broker's queue methods for ``RedisBroker``.

```
{prefix}queue:{name}          stream  priority 0's messages, read by the group "conveyor"
{prefix}queue:{name}:p{n}     stream  priority n's (queues with max_priority)
{prefix}levels:{name}         zset    the priority levels that have a stream
{prefix}leases:{name}         zset    "level/entry id/token/size" per delivery -> its deadline (ms)
{prefix}delayed:{name}        zset    delayed copies (MessagePack) -> when due (ms)
{prefix}counts:{name}         hash    published, delivered, acked, dead_lettered, bytes
{prefix}wake:{name}           channel told when messages become ready
{prefix}seq                   string  receives (tokens) and delayed copies are numbered from it
```

A delivered message stays in the group's pending entries list until it is settled, which
counts its deliveries; its lease deadline is the server's time. A lapsed lease is
reclaimed by the next receive (XCLAIM of that entry, which counts a delivery), before new
entries of its priority level. XAUTOCLAIM is not used: it reclaims by one idle time for
all entries, and a lease here is per delivery (``lease_timeout``, ``extend_lease``). Each
lease names the receive that made it (its token), so a late settlement of a copy that was
redelivered since finds no lease and is refused.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.brokers.redis import entries, scripts
from conveyor.brokers.redis import topology as stored
from conveyor.brokers.redis.connection import answer
from conveyor.brokers.redis.results import RedisResultStore
from conveyor.brokers.redis.scripts import Call
from conveyor.brokers.types import (
    Binding,
    DeadLetterReason,
    Delivery,
    ExchangeSpec,
    ExchangeStats,
    QueuedMessage,
    QueueSpec,
    QueueStats,
    as_float,
)
from conveyor.brokers.types import seconds as as_seconds
from conveyor.deaths import is_cycle, with_death
from conveyor.errors import ConfigError, LeaseLost
from conveyor.message import Message, stored_message
from conveyor.routing import ExchangeType

if TYPE_CHECKING:
    from conveyor.brokers.redis.broker import RedisConnection

MAX_RECEIVE_BATCH = 10_000

_tags = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Receipt:
    """A delivery's lease member: ``level/entry id/token/body size`` (see lua/q_common)."""

    member: str
    exchange: str
    """What the message was published through, for its dead-letter record."""


class RedisQueues:
    """The queue, exchange and browsing methods of the Broker, on Redis."""

    _connection: RedisConnection | None
    _topology_cache: stored.Topology | None = None
    _results: RedisResultStore | None = None
    url: str

    if TYPE_CHECKING:  # RedisBroker has them

        def _running(self) -> RedisConnection: ...

        async def connect(self) -> None: ...

    def connected(self) -> RedisConnection:
        """The open connection, for the result store that shares it."""
        return self._running()

    # topology

    @property
    def _keys(self) -> stored.Keys:
        return stored.Keys(self._running().prefix)

    async def _topology(self, *, fresh: bool = False) -> stored.Topology:
        if fresh or self._topology_cache is None:
            connection = self._running()
            with connection.endpoint.errors():
                self._topology_cache = await stored.load(connection.text, self._keys)
        return self._topology_cache

    async def _queue_spec(self, name: str) -> QueueSpec:
        known = await self._topology()
        if name not in known.queues:
            known = await self._topology(fresh=True)
        return known.queue(name)

    async def _change(self, apply: stored.Change) -> Any:
        connection = self._running()
        with connection.endpoint.errors():
            result = await stored.change(connection.text, self._keys, apply)
        self._topology_cache = None
        return result

    async def _declare_queue(self, spec: QueueSpec) -> None:
        wanted = stored.encode_queue(spec)

        async def apply(current: stored.Topology, pipeline: Any) -> None:
            existing = current.queues.get(spec.name)
            known = None if existing is None else stored.encode_queue(existing)
            if stored.check_redeclare(known, wanted, "queue", spec.name):
                pipeline.hset(self._keys.queues, spec.name, wanted)

        await self._change(apply)
        await self._run(Call(scripts.QUEUE_DECLARE, (), [self._running().prefix, spec.name]))

    async def delete_queue(self, name: str) -> int:
        prefix = self._running().prefix
        text = self._running().text

        async def apply(current: stored.Topology, pipeline: Any) -> int:
            current.queue(name)
            levels = await text.zrange(f"{prefix}levels:{name}", 0, -1)
            streams = [_stream(prefix, name, int(level)) for level in levels]
            count = sum([int(await text.xlen(s)) for s in streams])
            count += int(await text.zcard(f"{prefix}delayed:{name}"))
            pipeline.hdel(self._keys.queues, name)
            for exchange, known in current.exchanges.items():
                kept = tuple(b for b in known.bindings if b.queue != name)
                if exchange and kept != known.bindings:
                    pipeline.hset(self._keys.bindings, exchange, stored.encode_bindings(kept))
            pipeline.delete(*streams, *(f"{prefix}{part}:{name}" for part in _QUEUE_PARTS))
            return count

        return int(await self._change(apply))

    async def purge_queue(self, name: str) -> int:
        await self._queue_spec(name)
        return int(await self._run(Call(scripts.QUEUE_PURGE, (), [self._running().prefix, name])))

    async def list_queues(self) -> list[QueueSpec]:
        return [spec for _, spec in sorted((await self._topology(fresh=True)).queues.items())]

    async def queue_stats(self, name: str) -> QueueStats:
        await self._queue_spec(name)
        figures = await self._run(Call(scripts.QUEUE_STATS, (), [self._running().prefix, name]))
        ready, delayed, unacked, oldest, size, published, delivered, acked, dead, now = figures
        return QueueStats(
            queue=name,
            ready=ready,
            delayed=delayed,
            unacked=unacked,
            oldest_age=None if oldest < 0 else max(now - oldest, 0) / 1000,
            published=published,
            delivered=delivered,
            acked=acked,
            dead_lettered=dead,
            bytes=size,
        )

    async def declare_exchange(self, spec: ExchangeSpec) -> None:
        wanted = stored.encode_exchange(spec)

        async def apply(current: stored.Topology, pipeline: Any) -> None:
            existing = current.exchanges.get(spec.name)
            known = None
            if existing is not None and existing.spec is not None:
                known = stored.encode_exchange(existing.spec)
            if stored.check_redeclare(known, wanted, "exchange", spec.name):
                pipeline.hset(self._keys.exchanges, spec.name, wanted)

        await self._change(apply)

    async def delete_exchange(self, name: str) -> None:
        _check_not_default(name)

        async def apply(current: stored.Topology, pipeline: Any) -> None:
            current.exchange(name)
            pipeline.hdel(self._keys.exchanges, name)
            pipeline.hdel(self._keys.bindings, name)
            pipeline.hdel(self._keys.unroutable, name)

        await self._change(apply)

    async def exchange_stats(self, name: str) -> ExchangeStats:
        known = (await self._topology(fresh=True)).exchange(name)
        connection = self._running()
        with connection.endpoint.errors():
            unroutable = await answer(connection.text.hget(self._keys.unroutable, name))
        return ExchangeStats(
            exchange=name,
            type=known.type or ExchangeType.DIRECT,
            bindings=known.bindings,
            unroutable=int(unroutable or 0),
        )

    async def list_exchanges(self) -> list[ExchangeSpec]:
        known = await self._topology(fresh=True)
        return [e.spec for _, e in sorted(known.exchanges.items()) if e.spec is not None]

    async def bind(self, binding: Binding) -> None:
        await self._rebind(binding, keep=True)

    async def unbind(self, binding: Binding) -> None:
        await self._rebind(binding, keep=False)

    async def _rebind(self, binding: Binding, *, keep: bool) -> None:
        _check_not_default(binding.exchange)

        async def apply(current: stored.Topology, pipeline: Any) -> None:
            known = current.exchange(binding.exchange)
            current.queue(binding.queue)
            others = tuple(b for b in known.bindings if b != binding)
            bindings = (*others, binding) if keep else others
            pipeline.hset(self._keys.bindings, binding.exchange, stored.encode_bindings(bindings))

        await self._change(apply)

    # publishing

    async def _publish_batch(
        self, messages: Sequence[Message], *, exchange: str, mandatory: bool, delay: float
    ) -> list[int]:
        """One script for the whole batch, which makes it all or none; the server runs
        nothing else meanwhile (about a millisecond per few hundred messages)."""
        return await self._publish_routed(messages, exchange, mandatory, delay)

    async def _publish_routed(
        self, messages: Sequence[Message], exchange: str, mandatory: bool, delay: float
    ) -> list[int]:
        delay_ms = str(round(delay * 1000))
        fresh = False
        while True:
            known = await self._topology(fresh=fresh)
            copies = _Copies()
            routed: list[int] = []
            dropped: dict[str, int] = {}
            for message in messages:
                targets, unroutable = known.route(
                    exchange, message.routing_key, message.headers, mandatory=mandatory
                )
                if unroutable is not None:
                    dropped[unroutable] = dropped.get(unroutable, 0) + 1
                flat = entries.fields(message, exchange)
                for queue in targets:
                    level = _level(known.queues[queue], message.priority)
                    copies.add(queue, level, delay_ms, flat)
                routed.append(len(targets))
            if copies:
                call = Call(scripts.QUEUE_PUBLISH, [self._keys.version], [
                    self._running().prefix, known.version, *copies.args()
                ])  # fmt: skip
                if await self._run(call) < 0:
                    fresh = True
                    continue
            if dropped:
                await self._count_unroutable(dropped)
            return routed

    async def _count_unroutable(self, dropped: dict[str, int]) -> None:
        connection = self._running()
        with connection.endpoint.errors():
            async with connection.text.pipeline(transaction=False) as pipeline:
                for name, count in dropped.items():
                    pipeline.hincrby(self._keys.unroutable, name, count)
                await pipeline.execute()

    # consuming

    async def receive(
        self,
        queue: str,
        *,
        max_messages: int = 1,
        lease_timeout: float | None = None,
        wait: float = 0.0,
    ) -> list[Delivery]:
        if not 1 <= max_messages <= MAX_RECEIVE_BATCH:
            raise ConfigError(f"max_messages must be 1-{MAX_RECEIVE_BATCH}, not {max_messages}")
        lease = as_seconds(lease_timeout, "lease_timeout", positive=True)
        waiting = as_seconds(wait, "wait") or 0.0
        spec = await self._queue_spec(queue)
        lease_ms = str(max(1, round((lease or as_float(spec.lease_timeout) or 30.0) * 1000)))
        connection = self._running()
        call = Call(
            scripts.QUEUE_RECEIVE, (), [connection.prefix, queue, str(max_messages), lease_ms]
        )
        deadline = time.monotonic() + waiting
        deliveries, hint = await self._lease(spec, call)
        if deliveries or not waiting:
            return deliveries
        channel = f"{connection.prefix}wake:{queue}"
        with connection.endpoint.errors():
            async with connection.watcher.watching(channel, waiting) as watch:
                while True:
                    deliveries, hint = await self._lease(spec, call)
                    remaining = deadline - time.monotonic()
                    if deliveries or remaining <= 0:
                        return deliveries
                    pause = remaining if hint is None else min(remaining, max(hint, 0.001))
                    await watch.wait(pause)

    async def _lease(self, spec: QueueSpec, call: Call) -> tuple[list[Delivery], float | None]:
        """One receive script: the deliveries, and seconds until a delayed message is due
        or a lease lapses (None if neither is pending)."""
        now_ms, deadline_ms, hint_ms, taken = await self._run(call, raw=True)
        deadline = deadline_ms / 1000
        deliveries = []
        poison = []
        for _, entry_id, flat, count, member in taken:
            message, before, exchange = entries.message(entry_id, flat)
            receipt = Receipt(member.decode(), exchange)
            delivery = Delivery(message, spec.name, before + count, receipt, deadline, next(_tags))
            if spec.delivery_limit is not None and delivery.delivery_count > spec.delivery_limit:
                poison.append(delivery)
            else:
                deliveries.append(delivery)
        for delivery in poison:
            await self._dead_letter(delivery, DeadLetterReason.DELIVERY_LIMIT)
        hint = None if hint_ms < 0 else (hint_ms - now_ms) / 1000
        return deliveries, hint

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        lost: Delivery | None = None
        by_queue: dict[str, list[Delivery]] = {}
        for delivery in deliveries:
            by_queue.setdefault(delivery.queue, []).append(delivery)
        prefix = self._running().prefix
        calls = []
        for queue, batch in by_queue.items():
            args = [prefix, queue]
            args.append(" ".join(delivery.receipt.member for delivery in batch))
            calls.append(Call(scripts.QUEUE_ACK, (), args))
        connection = self._running()
        with connection.endpoint.errors():
            replies = await scripts.run_many(connection.text, calls)
        for batch, reply in zip(by_queue.values(), replies, strict=True):
            for delivery, acked in zip(batch, reply, strict=True):
                if not acked and lost is None:
                    lost = delivery
        if lost is not None:
            raise LeaseLost(lost.queue, lost.message.id)

    async def _nack(self, delivery: Delivery, *, requeue: bool, delay: float) -> None:
        if requeue and not delay:
            await self._requeue([delivery], uncounted=False, strict=True)
            return
        spec = await self._queue_spec(delivery.queue)
        if requeue:
            limit = spec.delivery_limit
            if limit is None or delivery.delivery_count < limit:
                flat = entries.fields(
                    delivery.message,
                    delivery.receipt.exchange,
                    deliveries=delivery.delivery_count,
                )
                level = _level(spec, delivery.message.priority)
                copy = _Copies()
                copy.add(spec.name, level, str(round(delay * 1000)), flat)
                await self._replace(delivery, "", copy.args(), strict=True)
                return
        await self._dead_letter(delivery, DeadLetterReason.REJECTED, strict=True)

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        await self._requeue(deliveries, uncounted=True, strict=False)

    async def _requeue(
        self, deliveries: Sequence[Delivery], *, uncounted: bool, strict: bool
    ) -> None:
        prefix = self._running().prefix
        by_queue: dict[str, list[Delivery]] = {}
        for delivery in deliveries:
            by_queue.setdefault(delivery.queue, []).append(delivery)
        for queue, batch in by_queue.items():
            args = [prefix, queue, "1" if uncounted else "0"]
            args.append(" ".join(delivery.receipt.member for delivery in batch))
            reply = await self._run(Call(scripts.QUEUE_REQUEUE, (), args))
            if strict and not all(reply):
                raise LeaseLost(batch[0].queue, batch[0].message.id)

    async def _dead_letter(
        self,
        delivery: Delivery,
        reason: DeadLetterReason,
        *,
        strict: bool = False,
    ) -> None:
        """Settle the delivery by routing a copy through its queue's dead-letter exchange,
        or by dropping it when the queue has none (or it names one that does not exist)."""
        fresh = False
        while True:
            known = await self._topology(fresh=fresh)
            spec = known.queue(delivery.queue)
            target_exchange = spec.dead_letter_exchange
            copies = _Copies()
            if target_exchange is not None and target_exchange in known.exchanges:
                message = delivery.message
                routing_key = spec.dead_letter_routing_key
                if routing_key is None:
                    routing_key = message.routing_key
                headers = with_death(
                    message.headers,
                    queue=spec.name,
                    reason=reason,
                    now=time.time(),
                    exchange=delivery.receipt.exchange,
                    routing_key=message.routing_key,
                    ttl=message.ttl,
                )
                copy = _copy(message, routing_key, headers)
                targets, _ = known.route(target_exchange, routing_key, headers, mandatory=False)
                flat = entries.fields(copy, target_exchange)
                for queue in targets:
                    if is_cycle(queue, headers):
                        continue
                    level = _level(known.queues[queue], copy.priority)
                    copies.add(queue, level, "0", flat)
            counter = "dead_lettered" if target_exchange is not None else ""
            outcome = await self._replace(
                delivery, counter, copies.args(), strict=strict, known=known
            )
            if outcome >= 0:
                return
            fresh = True

    async def _replace(
        self,
        delivery: Delivery,
        counter: str,
        copies: Sequence[bytes | str],
        *,
        strict: bool,
        known: stored.Topology | None = None,
    ) -> int:
        version = (known or await self._topology()).version
        receipt: Receipt = delivery.receipt
        args = [self._running().prefix, version, delivery.queue, receipt.member, counter]
        outcome = int(
            await self._run(Call(scripts.QUEUE_REPLACE, [self._keys.version], [*args, *copies]))
        )
        if outcome == 0 and strict:
            raise LeaseLost(delivery.queue, delivery.message.id)
        if outcome < 0 and known is None:
            self._topology_cache = None
            return await self._replace(delivery, counter, copies, strict=strict)
        return outcome

    async def extend_lease(self, delivery: Delivery, seconds: float) -> Delivery:
        duration = as_seconds(seconds, "seconds", positive=True) or 0.0
        receipt: Receipt = delivery.receipt
        args = [self._running().prefix, delivery.queue, receipt.member]
        deadline = await self._run(
            Call(scripts.QUEUE_EXTEND, (), [*args, str(max(1, round(duration * 1000)))])
        )
        if deadline < 0:
            raise LeaseLost(delivery.queue, delivery.message.id)
        return delivery.with_deadline(deadline / 1000)

    # browsing and moving

    async def browse(self, queue: str, *, limit: int = 100, offset: int = 0) -> list[QueuedMessage]:
        await self._queue_spec(queue)
        now_ms, found = await self._run(
            Call(scripts.QUEUE_BROWSE, (), [self._running().prefix, queue]), raw=True
        )
        listed: list[QueuedMessage] = []
        for entry_id, flat, count, deadline_ms, due_ms in found[offset : offset + limit]:
            message, before, _ = entries.message(entry_id, flat)
            enqueued = message.timestamp if due_ms >= 0 else entries.entry_time(entry_id)
            available = due_ms / 1000 if due_ms >= 0 else enqueued
            leased = deadline_ms > now_ms
            listed.append(
                QueuedMessage(message, queue, before + count, enqueued, available, leased)
            )
        return listed

    async def move_messages(
        self, queue: str, to_queue: str, *, message_ids: Sequence[str] | None = None
    ) -> int:
        await self._queue_spec(queue)
        await self._queue_spec(to_queue)
        if message_ids is not None and not message_ids:
            return 0
        args = [self._running().prefix, queue, to_queue, *(message_ids or ())]
        return int(await self._run(Call(scripts.QUEUE_MOVE, (), args)))

    # results

    def results(self) -> RedisResultStore:
        if self._results is None:
            self._results = RedisResultStore(self.url, broker=self)
        return self._results

    async def _run(self, call: Call, *, raw: bool = False) -> Any:
        return await self._running().run(call, raw=raw)


class _Copies:
    """Copies of messages for a script to store, grouped by queue, priority level and delay
    (each group's copies in the order added), as lua/q_common's ``enqueue_all`` takes them."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, int, str], list[list[bytes | str]]] = {}

    def __bool__(self) -> bool:
        return bool(self._groups)

    def add(self, queue: str, level: int, delay_ms: str, flat: list[bytes | str]) -> None:
        self._groups.setdefault((queue, level, delay_ms), []).append(flat)

    def args(self) -> list[bytes | str]:
        out: list[bytes | str] = []
        for (queue, level, delay_ms), copies in self._groups.items():
            out += [queue, str(level), delay_ms, str(len(copies))]
            for flat in copies:
                out.append(str(len(flat) // 2))
                out += flat
        return out


_QUEUE_PARTS = ("levels", "leases", "delayed", "counts")


def _stream(prefix: str, queue: str, level: int) -> str:
    return f"{prefix}queue:{queue}" if level == 0 else f"{prefix}queue:{queue}:p{level}"


def _level(spec: QueueSpec, priority: int) -> int:
    return min(priority, spec.max_priority) if spec.max_priority else 0


def _check_not_default(name: str) -> None:
    if name == stored.DEFAULT_EXCHANGE:
        raise ConfigError(
            "the default exchange routes by queue name and cannot be bound or deleted; "
            "declare an exchange of your own"
        )


def _copy(message: Message, routing_key: str, headers: dict[str, Any]) -> Message:
    return stored_message(
        message.body,
        routing_key,
        headers,
        message.priority,
        None,
        message.id,
        message.timestamp,
        message.content_type,
    )
