"""Queues, exchanges and bindings as stored in Redis, and routing a message to its queues.

```
{prefix}queues       hash    queue name -> its options (QueueSpec.options) as JSON
{prefix}exchanges    hash    exchange name -> {"type", "alternate_exchange"} as JSON
{prefix}bindings     hash    exchange name -> its bindings as a JSON list
{prefix}topology     string  a counter every change of the three bumps
{prefix}unroutable   hash    exchange name -> messages it could route nowhere
```

Each process caches the topology with the counter it was read at. Routing happens here,
in the pure routing module, and the script that stores the routed copies first checks the
counter: if a declaration elsewhere moved it, nothing is stored and the message is routed
again on a fresh read. A change is a WATCH on the counter and one MULTI, retried when
another process changed the topology in between.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio
from redis.exceptions import WatchError

from conveyor.brokers.types import Binding, ExchangeSpec, QueueSpec, as_float
from conveyor.errors import ConfigError, ExchangeNotFound, QueueNotFound
from conveyor.routing import ExchangeType, Route, route

DEFAULT_EXCHANGE = ""


@dataclass(frozen=True, slots=True)
class StoredExchange:
    spec: ExchangeSpec | None  # None for the default exchange
    bindings: tuple[Binding, ...] = ()
    routes: tuple[Route, ...] = field(init=False)

    def __post_init__(self) -> None:
        routes = tuple(Route(b.queue, b.routing_key, b.arguments) for b in self.bindings)
        object.__setattr__(self, "routes", routes)

    @property
    def type(self) -> ExchangeType | None:
        return None if self.spec is None else self.spec.type

    @property
    def alternate(self) -> str | None:
        return None if self.spec is None else self.spec.alternate_exchange


@dataclass(frozen=True, slots=True)
class Topology:
    version: str
    queues: dict[str, QueueSpec]
    exchanges: dict[str, StoredExchange]

    def queue(self, name: str) -> QueueSpec:
        try:
            return self.queues[name]
        except KeyError:
            raise QueueNotFound(name) from None

    def exchange(self, name: str) -> StoredExchange:
        try:
            return self.exchanges[name]
        except KeyError:
            raise ExchangeNotFound(name) from None

    def route(
        self, exchange: str, routing_key: str, headers: Mapping[str, Any], *, mandatory: bool
    ) -> tuple[list[str], str | None]:
        """The queues a message reaches, and the exchange to count if none: see
        ``routing.route``."""
        return route(
            self.exchanges, self.queues, exchange, routing_key, headers, mandatory=mandatory
        )


class Keys:
    def __init__(self, prefix: str) -> None:
        self.queues = f"{prefix}queues"
        self.exchanges = f"{prefix}exchanges"
        self.bindings = f"{prefix}bindings"
        self.version = f"{prefix}topology"
        self.unroutable = f"{prefix}unroutable"


def encode_queue(spec: QueueSpec) -> str:
    options = {
        name: as_float(value) if name in ("message_ttl", "expires", "lease_timeout") else value
        for name, value in spec.options().items()
    }
    return json.dumps(options, sort_keys=True, default=str)


def encode_exchange(spec: ExchangeSpec) -> str:
    return json.dumps(
        {"type": spec.type.value, "alternate_exchange": spec.alternate_exchange}, sort_keys=True
    )


def encode_bindings(bindings: tuple[Binding, ...]) -> str:
    return json.dumps(
        [
            {"queue": b.queue, "routing_key": b.routing_key, "arguments": dict(b.arguments)}
            for b in bindings
        ]
    )


def _decode(
    version: str | None,
    queues: Mapping[str, str],
    exchanges: Mapping[str, str],
    bindings: Mapping[str, str],
) -> Topology:
    stored = {DEFAULT_EXCHANGE: StoredExchange(None)}
    for name, text in exchanges.items():
        options = json.loads(text)
        spec = ExchangeSpec(name, options["type"], options["alternate_exchange"])
        listed = tuple(Binding(name, **b) for b in json.loads(bindings.get(name, "[]")))
        stored[name] = StoredExchange(spec, listed)
    return Topology(
        version or "0",
        {name: QueueSpec.from_options(name, json.loads(text)) for name, text in queues.items()},
        stored,
    )


async def load(client: redis.asyncio.Redis, keys: Keys) -> Topology:
    """The topology as stored, read in one MULTI so its parts agree with its version."""
    async with client.pipeline(transaction=True) as pipeline:
        pipeline.get(keys.version)
        pipeline.hgetall(keys.queues)
        pipeline.hgetall(keys.exchanges)
        pipeline.hgetall(keys.bindings)
        version, queues, exchanges, bindings = await pipeline.execute()
    return _decode(version, queues, exchanges, bindings)


Change = Callable[[Topology, Any], Awaitable[Any]]
"""Given the topology as read under WATCH and a pipeline in MULTI mode, queue the writes
(or raise before any); returns what the change returns."""


async def change(client: redis.asyncio.Redis, keys: Keys, apply: Change) -> Any:
    """Run ``apply`` on the current topology and bump the version, all or nothing."""
    while True:
        async with client.pipeline(transaction=True) as pipeline:
            try:
                await pipeline.watch(keys.version)
                pipeline.multi()  # type: ignore[no-untyped-call]
                current = await _read_watched(client, keys)
                result = await apply(current, pipeline)
                pipeline.incr(keys.version)
                await pipeline.execute()
                return result
            except WatchError:
                continue


async def _read_watched(client: redis.asyncio.Redis, keys: Keys) -> Topology:
    # the watch holds the connection; reads on another connection still see the same
    # state, since any write to the topology bumps the watched counter
    return await load(client, keys)


def check_redeclare(existing: str | None, wanted: str, what: str, name: str) -> bool:
    """Whether to store ``wanted``: False when it is stored already, ConfigError when
    something else is."""
    if existing is None:
        return True
    if existing == wanted:
        return False
    raise ConfigError(
        f"{what} {name!r} exists with other options ({existing}); delete it first to change "
        f"them (asked for {wanted})"
    )
