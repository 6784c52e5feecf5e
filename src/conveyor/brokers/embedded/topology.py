"""Queues, exchanges and bindings as stored, and routing a message to its queues.

Every process caches the topology and reloads it when the stored ``topology_version`` moves,
so a publish costs one indexed read to stay in step with declarations made elsewhere.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from conveyor.brokers.types import Binding, ExchangeSpec, ExchangeStats, QueueSpec, as_float
from conveyor.errors import ConfigError, ExchangeNotFound, QueueNotFound
from conveyor.routing import ExchangeType, Route, route

DEFAULT_EXCHANGE = ""


@dataclass(frozen=True, slots=True)
class StoredQueue:
    id: int
    spec: QueueSpec


@dataclass(frozen=True, slots=True)
class StoredExchange:
    spec: ExchangeSpec | None  # None for the default exchange
    routes: tuple[Route, ...]

    @property
    def type(self) -> ExchangeType | None:
        return None if self.spec is None else self.spec.type

    @property
    def alternate(self) -> str | None:
        return None if self.spec is None else self.spec.alternate_exchange


@dataclass(frozen=True, slots=True)
class Topology:
    version: int
    queues: dict[str, StoredQueue]
    queues_by_id: dict[int, StoredQueue]
    exchanges: dict[str, StoredExchange]

    def queue(self, name: str) -> StoredQueue:
        try:
            return self.queues[name]
        except KeyError:
            raise QueueNotFound(name) from None

    def route(
        self, exchange: str, routing_key: str, headers: Any, *, mandatory: bool
    ) -> tuple[list[StoredQueue], str | None]:
        """The queues a message reaches and the exchange to count as unroutable: see
        ``routing.route``."""
        names, unroutable = route(
            self.exchanges, self.queues, exchange, routing_key, headers, mandatory=mandatory
        )
        return [self.queues[name] for name in names], unroutable


VERSION_QUERY = "SELECT value FROM meta WHERE key = 'topology_version'"


def version(connection: sqlite3.Connection) -> int:
    (number,) = connection.execute(VERSION_QUERY).fetchone()
    return int(number)


def current(connection: sqlite3.Connection, cached: Topology | None) -> Topology:
    number = version(connection)
    if cached is not None and cached.version == number:
        return cached
    return _load(connection, number)


def _load(connection: sqlite3.Connection, version: int) -> Topology:
    queues = {
        name: StoredQueue(id, QueueSpec(name, **json.loads(options)))
        for id, name, options in connection.execute("SELECT id, name, options FROM queues")
    }
    routes: dict[str, list[Route]] = {}
    for exchange, queue, routing_key, arguments in connection.execute(
        "SELECT exchange, queue, routing_key, arguments FROM bindings"
    ):
        routes.setdefault(exchange, []).append(Route(queue, routing_key, json.loads(arguments)))
    exchanges = {
        name: StoredExchange(
            ExchangeSpec(name, ExchangeType(kind), alternate) if name else None,
            tuple(routes.get(name, ())),
        )
        for name, kind, alternate in connection.execute(
            "SELECT name, type, alternate_exchange FROM exchanges"
        )
    }
    return Topology(version, queues, {queue.id: queue for queue in queues.values()}, exchanges)


def changed(connection: sqlite3.Connection) -> None:
    connection.execute("UPDATE meta SET value = value + 1 WHERE key = 'topology_version'")


def declare_queue(connection: sqlite3.Connection, spec: QueueSpec, now_ms: int) -> None:
    options = spec.options()
    row = connection.execute("SELECT options FROM queues WHERE name = ?", (spec.name,)).fetchone()
    if row is not None:
        existing = json.loads(row[0])
        if existing != json.loads(json.dumps(options)):
            raise ConfigError(
                f"queue {spec.name!r} exists with options {existing}, not {options}; declare it "
                "with the same options, or delete it first (its messages go with it)"
            )
        connection.execute("UPDATE queues SET last_used_ms = ? WHERE name = ?", (now_ms, spec.name))
        return
    expires = as_float(spec.expires)
    expires_ms = None if expires is None else int(expires * 1000)
    connection.execute(
        "INSERT INTO queues (name, options, expires_ms, created_at_ms, last_used_ms)"
        " VALUES (?, ?, ?, ?, ?)",
        (spec.name, json.dumps(options), expires_ms, now_ms, now_ms),
    )
    changed(connection)


def delete_queue(connection: sqlite3.Connection, queue: StoredQueue) -> int:
    (count,) = connection.execute(
        "SELECT count(*) FROM messages WHERE queue_id = ?", (queue.id,)
    ).fetchone()
    connection.execute("DELETE FROM messages WHERE queue_id = ?", (queue.id,))
    connection.execute("DELETE FROM waiters WHERE queue_id = ?", (queue.id,))
    connection.execute("DELETE FROM bindings WHERE queue = ?", (queue.spec.name,))
    connection.execute("DELETE FROM queues WHERE id = ?", (queue.id,))
    changed(connection)
    return int(count)


def declare_exchange(connection: sqlite3.Connection, spec: ExchangeSpec) -> None:
    row = connection.execute(
        "SELECT type, alternate_exchange FROM exchanges WHERE name = ?", (spec.name,)
    ).fetchone()
    if row is not None:
        if tuple(row) != (spec.type.value, spec.alternate_exchange):
            raise ConfigError(
                f"exchange {spec.name!r} exists as type {row[0]!r} with alternate exchange "
                f"{row[1]!r}; declare it the same way, or delete it first"
            )
        return
    connection.execute(
        "INSERT INTO exchanges (name, type, alternate_exchange) VALUES (?, ?, ?)",
        (spec.name, spec.type.value, spec.alternate_exchange),
    )
    changed(connection)


def delete_exchange(connection: sqlite3.Connection, name: str) -> None:
    _check_not_default(name)
    if connection.execute("DELETE FROM exchanges WHERE name = ?", (name,)).rowcount == 0:
        raise ExchangeNotFound(name)
    connection.execute("DELETE FROM bindings WHERE exchange = ?", (name,))
    changed(connection)


def bind(connection: sqlite3.Connection, topology: Topology, binding: Binding) -> None:
    _check_binding(topology, binding)
    connection.execute(
        "INSERT OR IGNORE INTO bindings (exchange, queue, routing_key, arguments)"
        " VALUES (?, ?, ?, ?)",
        (binding.exchange, binding.queue, binding.routing_key, _arguments(binding)),
    )
    changed(connection)


def unbind(connection: sqlite3.Connection, topology: Topology, binding: Binding) -> None:
    _check_binding(topology, binding)
    connection.execute(
        "DELETE FROM bindings WHERE exchange = ? AND queue = ? AND routing_key = ?"
        " AND arguments = ?",
        (binding.exchange, binding.queue, binding.routing_key, _arguments(binding)),
    )
    changed(connection)


def _arguments(binding: Binding) -> str:
    return json.dumps(dict(binding.arguments), sort_keys=True, separators=(",", ":"))


def _check_binding(topology: Topology, binding: Binding) -> None:
    _check_not_default(binding.exchange)
    if binding.exchange not in topology.exchanges:
        raise ExchangeNotFound(binding.exchange)
    topology.queue(binding.queue)


def _check_not_default(name: str) -> None:
    if name == DEFAULT_EXCHANGE:
        raise ConfigError(
            "the default exchange routes by queue name and cannot be bound or deleted; "
            "declare an exchange of your own"
        )


def exchange_stats(connection: sqlite3.Connection, topology: Topology, name: str) -> ExchangeStats:
    stored = topology.exchanges.get(name)
    if stored is None:
        raise ExchangeNotFound(name)
    (unroutable,) = connection.execute(
        "SELECT unroutable FROM exchanges WHERE name = ?", (name,)
    ).fetchone()
    return ExchangeStats(
        exchange=name,
        type=stored.spec.type if stored.spec else ExchangeType.DIRECT,
        bindings=tuple(
            Binding(name, route.queue, route.routing_key, route.arguments or {})
            for route in stored.routes
        ),
        unroutable=unroutable,
    )
