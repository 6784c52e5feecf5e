"""The embedded broker: RabbitMQ's queue semantics on a SQLite file shared by processes.

``sqlite:///path.db`` stores everything in one WAL-mode file that any number of processes
on the host open at once; ``memory://`` runs the same engine on a private in-memory
database. This class only adapts the Broker interface onto the modules beside it.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from conveyor.brokers.base import Broker
from conveyor.brokers.capabilities import DECLARED
from conveyor.brokers.embedded import (
    browse,
    dead_letters,
    jobs,
    metrics,
    queues,
    rows,
    topology,
    wakeup,
)
from conveyor.brokers.embedded.db import Database, Durability
from conveyor.brokers.embedded.results import EmbeddedResults
from conveyor.brokers.embedded.rows import Changes, now_ms
from conveyor.brokers.embedded.stream_broker import StreamMethods
from conveyor.brokers.embedded.topology import Topology
from conveyor.brokers.types import (
    Binding,
    Delivery,
    ExchangeSpec,
    ExchangeStats,
    JobRecord,
    JobSubmission,
    QueuedMessage,
    QueueSpec,
    QueueStats,
    Settlement,
    as_float,
)
from conveyor.brokers.types import seconds as as_seconds
from conveyor.errors import BrokerUnavailable, ConfigError, ConveyorError, LeaseLost
from conveyor.message import Message
from conveyor.settings import BrokerURL, mask_url, options_from_query

T = TypeVar("T")

MAX_RECEIVE_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class EmbeddedOptions:
    """Options in the broker URL's query string.

    Args:
        durability: "fsync" survives power loss, "normal" survives any process crash,
            "memory" leaves writing to the OS.
        lock_timeout: seconds to wait for another process's write lock before DatabaseLocked.
        max_message_size: bytes of body plus headers; larger messages raise MessageTooLarge.
        poll_interval: longest a waiting receiver sleeps without a wake-up before it looks.
        retention_interval: seconds between background retention and compaction passes.
    """

    durability: Durability = Durability.NORMAL
    lock_timeout: float = 10.0
    max_message_size: int = 1024 * 1024
    poll_interval: float = 1.0
    retention_interval: float = 10.0

    def __post_init__(self) -> None:
        as_seconds(self.lock_timeout, "lock_timeout")
        as_seconds(self.retention_interval, "retention_interval", positive=True)
        as_seconds(self.poll_interval, "poll_interval", positive=True)
        if self.max_message_size < 1:
            raise ConfigError(f"max_message_size must be >= 1, not {self.max_message_size}")


class _StaleTopology(Exception):
    """Another process changed queues, exchanges or bindings since this one last looked."""


class EmbeddedBroker(StreamMethods, Broker):
    scheme = "sqlite"
    capabilities = DECLARED["sqlite"]
    blocking_submit = True

    def __init__(self, url: str) -> None:
        super().__init__(url)
        parsed = BrokerURL.parse(url)
        self.options = options_from_query(EmbeddedOptions, parsed.query)
        self.path = self._path(parsed)
        self._db: Database | None = None
        self._results: EmbeddedResults | None = None
        self._topology: Topology | None = None
        self._notifier = wakeup.Notifier()
        self._maintenance_due_ms = 0

    def _path(self, url: BrokerURL) -> str | None:
        """The file's absolute path: a relative one is resolved against the working
        directory once, here, so that a later chdir cannot move the store."""
        if url.netloc or not url.path.lstrip("/"):
            raise ConfigError(
                f"{mask_url(self.url)!r} names no file: use sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db"
            )
        return os.path.abspath(url.path[1:])

    @property
    def location(self) -> str:
        return f"sqlite:///{self.path}"

    def missing_store(self) -> str | None:
        if self.path is None or os.path.exists(self.path):
            return None
        return f"database at {self.path!r}"

    async def connect(self) -> None:
        if self._db is None:
            self._db = Database(
                self.path,
                durability=self.options.durability,
                lock_timeout=self.options.lock_timeout,
            )

    async def close(self) -> None:
        await self._stop_retention()
        if self._db is not None:
            self._db.close()
            self._db = None
        self._notifier.close()

    async def ping(self) -> None:
        await self._read(lambda connection, topology: None)

    # transactions

    def _database(self) -> Database:
        if self._db is None:
            raise BrokerUnavailable(f"the broker for {self.url} is not connected; call connect()")
        return self._db

    def _current(self, connection: sqlite3.Connection) -> Topology:
        self._topology = topology.current(connection, self._topology)
        return self._topology

    async def _read(self, work: Callable[[sqlite3.Connection, Topology], T]) -> T:
        return await self._database().read(lambda c: work(c, self._current(c)))

    async def _write(self, work: Callable[[sqlite3.Connection, Topology, Changes], T]) -> T:
        """Run ``work`` in a write transaction, then wake receivers of the queues it fed.

        ``work`` runs on the cached topology, and the transaction checks the cache is still
        current in the same statement that finds the receivers to wake: one read instead of
        two on the hot path. On a stale cache, the transaction is rolled back and rerun.
        """
        database = self._database()
        while True:
            gone = set(self._notifier.gone)
            attempt = partial(self._optimistic, work, gone, self._topology)
            try:
                result, waiters = await database.write(attempt)
            except _StaleTopology:
                self._topology = None
                continue
            self._notifier.gone -= gone
            if waiters:
                self._notifier.notify(waiters)
            return result

    def _write_blocking(self, work: Callable[[sqlite3.Connection, Topology, Changes], T]) -> T:
        """``_write`` from a thread without an event loop; receivers that have gone are
        left for the next ``_write`` to remove."""
        database = self._database()
        while True:
            attempt = partial(self._optimistic, work, set(), self._topology)
            try:
                result, waiters = database.write_blocking(attempt)
            except _StaleTopology:
                self._topology = None
                continue
            if waiters:
                self._notifier.notify(waiters)
            return result

    def _optimistic(
        self,
        work: Callable[[sqlite3.Connection, Topology, Changes], T],
        gone: set[str],
        cached: Topology | None,
        connection: sqlite3.Connection,
    ) -> tuple[T, list[str]]:
        if gone:
            wakeup.unregister(connection, gone)
        known = cached if cached is not None else self._current(connection)
        changes = Changes()
        try:
            result = work(connection, known, changes)
        except ConveyorError:
            if topology.version(connection) != known.version:
                raise _StaleTopology from None
            raise
        version, waiters = wakeup.version_and_waiters(connection, changes.woken_queue_ids)
        if version != known.version:
            raise _StaleTopology
        if changes.counters:
            rows.add_counters(connection, changes.counters)
        return result, waiters

    async def _change_topology(self, work: Callable[[sqlite3.Connection, Topology], T]) -> T:
        """Declarations: run on a freshly read topology, and drop the cache afterwards."""
        try:
            return await self._database().write(lambda c: work(c, self._current(c)))
        finally:
            self._topology = None

    # topology

    async def _declare_queue(self, spec: QueueSpec) -> None:
        await self._change_topology(lambda c, t: topology.declare_queue(c, spec, now_ms()))

    async def delete_queue(self, name: str) -> int:
        return await self._change_topology(lambda c, t: topology.delete_queue(c, t.queue(name)))

    async def purge_queue(self, name: str) -> int:
        return await self._write(lambda c, t, _: queues.purge(c, t.queue(name), now_ms()))

    async def list_queues(self) -> list[QueueSpec]:
        await self._maintain()

        def listing(connection: sqlite3.Connection, topology: Topology) -> list[QueueSpec]:
            return [queue.spec for _, queue in sorted(topology.queues.items())]

        return await self._read(listing)

    async def queue_stats(self, name: str) -> QueueStats:
        await self._maintain()

        def read(connection: sqlite3.Connection, known: Topology) -> QueueStats:
            queue = known.queue(name)
            return queues.stats(connection, queue, now_ms())

        return await self._read(read)

    async def declare_exchange(self, spec: ExchangeSpec) -> None:
        await self._change_topology(lambda c, t: topology.declare_exchange(c, spec))

    async def delete_exchange(self, name: str) -> None:
        await self._change_topology(lambda c, t: topology.delete_exchange(c, name))

    async def exchange_stats(self, name: str) -> ExchangeStats:
        return await self._read(lambda c, t: topology.exchange_stats(c, t, name))

    async def list_exchanges(self) -> list[ExchangeSpec]:
        return await self._read(lambda c, t: metrics.exchanges(t))

    async def bind(self, binding: Binding) -> None:
        await self._change_topology(lambda c, t: topology.bind(c, t, binding))

    async def unbind(self, binding: Binding) -> None:
        await self._change_topology(lambda c, t: topology.unbind(c, t, binding))

    # publishing

    async def _publish_batch(
        self, messages: Sequence[Message], *, exchange: str, mandatory: bool, delay: float
    ) -> list[int]:
        delay_ms = int(delay * 1000) if delay else 0
        limit = self.options.max_message_size
        batch = [rows.prepare(message, limit) for message in messages]
        if not batch:
            return []

        def work(connection: sqlite3.Connection, topology: Topology, changes: Changes) -> list[int]:
            now = now_ms()
            return queues.store(
                connection,
                topology,
                batch,
                exchange=exchange,
                mandatory=mandatory,
                available_at_ms=now + delay_ms,
                now_ms=now,
                changes=changes,
            )

        return await self._write(work)

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
        deadline = time.monotonic() + (as_seconds(wait, "wait") or 0.0)
        lease_args = (queue, max_messages, lease)
        await self._maintain()
        deliveries, _ = await self._write(partial(self._lease, *lease_args, None))
        if deliveries or deadline <= time.monotonic():
            return deliveries
        signal = wakeup.WakeSignal()
        registered = False
        try:
            while True:
                remaining = deadline - time.monotonic()
                address = signal.address if remaining > 0 else None
                deliveries, next_ms = await self._write(partial(self._lease, *lease_args, address))
                registered = address is not None and not deliveries
                if not registered:
                    return deliveries
                due_ms = min(next_ms or self._maintenance_due_ms, self._maintenance_due_ms)
                pause = min(remaining, self.options.poll_interval, due_ms / 1000 - time.time())
                await signal.wait(max(pause, 0.0))
                await self._maintain()
        finally:
            signal.close()
            if registered:
                self._notifier.gone.add(signal.address)

    def _lease(
        self,
        name: str,
        max_messages: int,
        lease_timeout: float | None,
        waiter: str | None,
        connection: sqlite3.Connection,
        topology: Topology,
        changes: Changes,
    ) -> tuple[list[Delivery], int | None]:
        """Lease messages; when there are none, record ``waiter`` to be woken."""
        now = now_ms()
        queue = topology.queue(name)
        lease_ms = int((lease_timeout or as_float(queue.spec.lease_timeout) or 0) * 1000)
        deliveries = queues.lease(
            connection,
            topology,
            queue,
            max_messages=max_messages,
            lease_until_ms=now + lease_ms,
            token=secrets.token_hex(8),
            now_ms=now,
            changes=changes,
        )
        if waiter is None:
            return deliveries, None
        if deliveries:
            wakeup.unregister(connection, [waiter])
            return deliveries, None
        wakeup.register(connection, waiter, queue.id)
        return deliveries, queues.next_available_ms(connection, queue)

    async def _maintain(self) -> None:
        """Expire messages past their TTL and delete queues unused past ``expires``.

        The embedded broker has no server process, so every broker does this on its way
        through receive, stats and listings: when the next message is due to expire, and at
        least once a second. It is idempotent, so several processes doing it is harmless.
        """
        now = now_ms()
        if now < self._maintenance_due_ms:
            return

        def expire(connection: sqlite3.Connection, known: Topology, changes: Changes) -> int:
            jobs.expire(connection, now)
            return dead_letters.expire(connection, known, now, changes)

        more = await self._write(expire) > 0
        unused = await self._change_topology(partial(_delete_unused_queues, now))
        next_expiry = await self._read(lambda c, t: dead_letters.next_expiry_ms(c))
        due = now if more else now + 1000
        self._maintenance_due_ms = min(due, next_expiry or due)
        if unused:
            self._topology = None

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        lost = await self._write(lambda c, t, ch: queues.ack(c, t, deliveries, now_ms(), ch))
        if lost:
            first = next(d for d in deliveries if d.tag == lost[0])
            raise LeaseLost(first.queue, first.message.id)

    async def _nack(self, delivery: Delivery, *, requeue: bool, delay: float) -> None:
        delay_ms = int(delay * 1000)

        def work(connection: sqlite3.Connection, topology: Topology, changes: Changes) -> bool:
            now = now_ms()
            queue = topology.queue(delivery.queue)
            if not requeue:
                return queues.reject(connection, topology, queue, delivery, now, changes)
            changes.woken_queue_ids.add(queue.id)
            return queues.requeue(connection, delivery, now + delay_ms if delay_ms else None, now)

        if not await self._write(work):
            raise LeaseLost(delivery.queue, delivery.message.id)

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return

        def work(connection: sqlite3.Connection, known: Topology, changes: Changes) -> int:
            changes.woken_queue_ids.update(known.queue(d.queue).id for d in deliveries)
            return queues.release(connection, deliveries, now_ms())

        await self._write(work)

    async def extend_lease(self, delivery: Delivery, seconds: float) -> Delivery:
        extra_ms = int((as_seconds(seconds, "seconds", positive=True) or 0.0) * 1000)

        def work(connection: sqlite3.Connection, topology: Topology, changes: Changes) -> int:
            now = now_ms()
            return now + extra_ms if queues.extend(connection, delivery, now + extra_ms, now) else 0

        until_ms = await self._write(work)
        if not until_ms:
            raise LeaseLost(delivery.queue, delivery.message.id)
        return delivery.with_deadline(until_ms / 1000)

    # browsing and moving

    async def browse(self, queue: str, *, limit: int = 100, offset: int = 0) -> list[QueuedMessage]:
        return await self._read(lambda c, t: browse.browse(c, t.queue(queue), limit, offset))

    async def move_messages(
        self, queue: str, to_queue: str, *, message_ids: Sequence[str] | None = None
    ) -> int:
        def work(connection: sqlite3.Connection, known: Topology, changes: Changes) -> int:
            now = now_ms()
            source, target = known.queue(queue), known.queue(to_queue)
            rows = browse.waiting_rows(connection, source, now, message_ids=message_ids)
            if not rows:
                return 0
            moved = browse.move(connection, source, target, rows, now, changes)
            jobs.requeued(connection, moved, now)
            return len(moved)

        return await self._write(work)

    # jobs: the one-transaction path (ATOMIC_SETTLE); records through results()

    async def submit_jobs(self, submissions: Sequence[JobSubmission]) -> list[JobRecord]:
        return await self._write(self._submission(submissions))

    def submit_jobs_blocking(self, submissions: Sequence[JobSubmission]) -> list[JobRecord]:
        return self._write_blocking(self._submission(submissions))

    def _submission(
        self, submissions: Sequence[JobSubmission]
    ) -> Callable[[sqlite3.Connection, Topology, Changes], list[JobRecord]]:
        limit = self.options.max_message_size
        prepared = [
            (s, rows.prepare(s.message, limit, task=s.task, result_ttl=s.result_ttl))
            for s in submissions
        ]
        return lambda c, t, ch: jobs.submit(c, t, prepared, now_ms(), ch)

    async def settle(self, settlements: Sequence[Settlement]) -> list[Settlement]:
        if not settlements:
            return []
        return await self._write(lambda c, t, ch: jobs.settle(c, t, settlements, now_ms(), ch))

    async def persistence(self) -> str:
        if self.private_store:
            return "in memory: the store goes with the process"
        promise = {
            Durability.FSYNC: "every commit is synced to disk before it is confirmed",
            Durability.NORMAL: "a confirmed write survives any process crash, not power loss",
            Durability.MEMORY: "writes are left to the OS: a crash of the machine loses some",
        }
        durability = self.options.durability
        return f"SQLite file in WAL mode, durability={durability.value}: {promise[durability]}"

    def results(self) -> EmbeddedResults:
        if self._results is None:
            self._results = EmbeddedResults(self)
        return self._results


def _delete_unused_queues(now: int, connection: sqlite3.Connection, known: Topology) -> int:
    names = connection.execute(
        "SELECT name FROM queues WHERE expires_ms IS NOT NULL AND last_used_ms + expires_ms <= ?"
        " AND id NOT IN (SELECT queue_id FROM waiters)",
        (now,),
    ).fetchall()
    for (name,) in names:
        topology.delete_queue(connection, known.queue(name))
    return len(names)


class MemoryBroker(EmbeddedBroker):
    """The embedded engine on a private in-memory database: for tests and throwaway work."""

    scheme = "memory"
    capabilities = DECLARED["memory"]
    private_store = True

    def _path(self, url: BrokerURL) -> str | None:
        if url.netloc or url.path.strip("/"):
            raise ConfigError(f"{mask_url(self.url)!r}: memory:// takes no path")
        return None

    @property
    def location(self) -> str:
        return f"memory:// (pid {os.getpid()} only)"
