"""Queues, exchanges and bindings on the server, declared and looked up over AMQP.

Every command goes through one channel ``Slot``: a refusal (a redeclare with other
arguments, a missing queue) closes that channel on the server, and the slot opens a new
one for the next command, so the broker never keeps a dead channel.

Listings need the management API; AMQP has no command for them.
"""

from __future__ import annotations

import re
from typing import Any

from aiormq.abc import AbstractChannel

from conveyor.brokers.rabbitmq import arguments as args
from conveyor.brokers.rabbitmq.channels import Slot
from conveyor.brokers.rabbitmq.delays import (
    DELAY_EXCHANGE,
    PREFIX,
    DelayQueues,
    DelayRoute,
    is_delay_queue,
)
from conveyor.brokers.rabbitmq.management import Management, ManagementUnavailable
from conveyor.brokers.rabbitmq.options import QueueType
from conveyor.brokers.types import Binding, ExchangeSpec, QueueSpec
from conveyor.errors import BrokerUnavailable, ConfigError, QueueNotFound

_RESERVED = (
    f"names starting with {PREFIX!r} and the exchange {DELAY_EXCHANGE!r} are reserved for "
    "the delay queues of the RabbitMQ backend; pick another name"
)


class Topology:
    def __init__(self, slot: Slot, management: Management | None, queue_type: QueueType) -> None:
        self._slot = slot
        self.management = management
        self._queue_type = queue_type
        self.delays = DelayQueues()
        self._specs: dict[str, QueueSpec] = {}
        self._delay_exchange = False

    async def close(self) -> None:
        await self._slot.close()

    # queues

    async def declare_queue(self, spec: QueueSpec) -> None:
        if is_delay_queue(spec.name):
            raise ConfigError(f"queue {spec.name!r}: {_RESERVED}")
        arguments = args.queue_arguments(spec, self._queue_type)
        await self._slot.run(
            lambda c: c.queue_declare(spec.name, durable=True, arguments=arguments),
            f"declaring queue {spec.name!r}",
        )
        self._specs[spec.name] = spec

    async def ready(self, name: str) -> int:
        """Messages ready in the queue now (QueueNotFound if there is no such queue)."""
        ok = await self._slot.run(
            lambda c: c.queue_declare(name, passive=True), f"looking up queue {name!r}"
        )
        return int(ok.message_count or 0)

    async def exists(self, name: str) -> bool:
        try:
            await self.ready(name)
        except QueueNotFound:
            return False
        return True

    async def delete_queue(self, name: str) -> int:
        """Delete the queue and its delay queues; the count is of ready and delayed messages
        (RabbitMQ does not count the unacknowledged ones it drops)."""
        await self.ready(name)
        ok = await self._slot.run(
            lambda c: c.queue_delete(name, if_unused=False, if_empty=False),
            f"deleting queue {name!r}",
        )
        self._specs.pop(name, None)
        count = int(ok.message_count or 0)
        for delay_queue in await self.delay_queues_for(name, partial=True) or []:
            count += await self._drop(delay_queue, delete=True)
        return count

    async def purge_queue(self, name: str) -> int:
        ok = await self._slot.run(lambda c: c.queue_purge(name), f"purging queue {name!r}")
        count = int(ok.message_count or 0)
        for delay_queue in await self.delay_queues_for(name, partial=True) or []:
            count += await self._drop(delay_queue, delete=False)
        return count

    async def list_queues(self) -> list[QueueSpec]:
        listed = await self._listing(self._management().queues(["name", "arguments"]))
        specs = []
        for entry in listed:
            name = entry.get("name")
            if not isinstance(name, str) or is_delay_queue(name):
                continue
            try:
                specs.append(args.spec_from_arguments(name, entry.get("arguments") or {}))
            except ConfigError:
                continue  # a name Conveyor cannot use (made by another client)
        return sorted(specs, key=lambda spec: spec.name)

    async def spec_of(self, name: str) -> QueueSpec | None:
        """The queue's options as declared here, or as the management API lists them."""
        if name not in self._specs and self.management is not None:
            try:
                found = await self.management.queue(name)
            except ManagementUnavailable:
                return None
            if found is not None:
                self._specs[name] = args.spec_from_arguments(name, found.get("arguments") or {})
        return self._specs.get(name)

    def known_spec(self, name: str) -> QueueSpec | None:
        return self._specs.get(name)

    # exchanges and bindings

    async def declare_exchange(self, spec: ExchangeSpec) -> None:
        if spec.name == DELAY_EXCHANGE:
            raise ConfigError(f"exchange {spec.name!r}: {_RESERVED}")
        await self._slot.run(
            lambda c: c.exchange_declare(
                spec.name,
                exchange_type=spec.type.value,
                durable=True,
                arguments=args.exchange_arguments(spec),
            ),
            f"declaring exchange {spec.name!r}",
        )

    async def delete_exchange(self, name: str) -> None:
        await self.exchange_exists(name)
        await self._slot.run(lambda c: c.exchange_delete(name), f"deleting exchange {name!r}")

    async def exchange_exists(self, name: str) -> None:
        """Raise ExchangeNotFound unless the exchange exists."""
        if name:
            await self._slot.run(
                lambda c: c.exchange_declare(name, passive=True), f"looking up exchange {name!r}"
            )

    async def list_exchanges(self) -> list[ExchangeSpec]:
        listed = await self._listing(self._management().exchanges())
        specs = []
        for entry in listed:
            name = entry.get("name")
            if not isinstance(name, str) or not name or name.startswith("amq."):
                continue
            if name == DELAY_EXCHANGE:
                continue
            spec = args.exchange_from_listing(
                name, str(entry.get("type")), entry.get("arguments") or {}
            )
            if spec is not None:
                specs.append(spec)
        return sorted(specs, key=lambda spec: spec.name)

    async def bind(self, binding: Binding) -> None:
        arguments = dict(binding.arguments)
        await self._slot.run(
            lambda c: c.queue_bind(
                binding.queue, binding.exchange, binding.routing_key, arguments=arguments
            ),
            f"binding queue {binding.queue!r} to exchange {binding.exchange!r}",
        )

    async def unbind(self, binding: Binding) -> None:
        arguments = dict(binding.arguments)
        await self._slot.run(
            lambda c: c.queue_unbind(
                binding.queue, binding.exchange, binding.routing_key, arguments=arguments
            ),
            f"unbinding queue {binding.queue!r} from exchange {binding.exchange!r}",
        )

    # delay queues

    async def ensure_delay(self, route: DelayRoute) -> None:
        """Declare the delay queue (and the delay exchange) if it is due (see delays)."""
        if not self.delays.due(route):
            return
        if not self._delay_exchange:
            await self._slot.run(
                lambda c: c.exchange_declare(DELAY_EXCHANGE, exchange_type="headers", durable=True),
                "declaring the delay exchange",
            )
            self._delay_exchange = True

        async def declare(channel: AbstractChannel) -> None:
            await channel.queue_declare(route.queue, durable=True, arguments=route.arguments)
            await channel.queue_bind(route.queue, DELAY_EXCHANGE, arguments=route.binding)

        await self._slot.run(declare, f"declaring delay queue {route.queue!r}")
        self.delays.declared(route)

    def forget_delays(self) -> None:
        self.delays.forget()
        self._delay_exchange = False

    async def delay_queues_for(self, name: str, *, partial: bool = False) -> list[str] | None:
        """The delay queues leading back to queue ``name``.

        Found through the management API; without it None, or with ``partial`` the ones
        this broker declared itself.
        """
        known = [
            queue
            for queue in self.delays.known()
            if _targets(queue, self._arguments_of(queue), name)
        ]
        if self.management is None:
            return known if partial else None
        try:
            listed = await self.management.queues(
                ["name", "arguments"], name_pattern=f"^{re.escape(PREFIX)}"
            )
        except ManagementUnavailable:
            return known if partial else None
        return sorted(
            entry["name"]
            for entry in listed
            if isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and _targets(entry["name"], entry.get("arguments") or {}, name)
        )

    async def delayed(self, name: str) -> int | None:
        """Messages waiting in the queue's delay queues; None if they cannot be found."""
        queues = await self.delay_queues_for(name)
        if queues is None:
            return None
        total = 0
        for queue in queues:
            try:
                total += await self.ready(queue)
            except QueueNotFound:
                continue  # expired since it was listed
        return total

    # helpers

    def _arguments_of(self, delay_queue: str) -> dict[str, Any]:
        """Arguments of a delay queue declared here (its name says where it leads)."""
        ms, kind, target = delay_queue[len(PREFIX) :].split(".", 2)
        if kind != "queue":
            return {}
        return DelayRoute.to_queue(int(ms) / 1000, target).arguments

    async def _drop(self, delay_queue: str, *, delete: bool) -> int:
        async def drop(channel: AbstractChannel) -> int:
            if delete:
                deleted = await channel.queue_delete(delay_queue, if_unused=False, if_empty=False)
                return int(deleted.message_count or 0)
            purged = await channel.queue_purge(delay_queue)
            return int(purged.message_count or 0)

        try:
            count = await self._slot.run(drop, f"emptying delay queue {delay_queue!r}")
        except QueueNotFound:
            return 0
        if delete:
            self.delays.forget(delay_queue)
        return count

    def _management(self) -> Management:
        if self.management is None:
            raise BrokerUnavailable(
                "listing queues and exchanges needs RabbitMQ's management API, which this "
                "broker URL turns off (management=false)"
            )
        return self.management

    @staticmethod
    async def _listing(pending: Any) -> list[dict[str, Any]]:
        try:
            listed = await pending
        except ManagementUnavailable as exc:
            raise BrokerUnavailable(
                f"{exc}; listing queues and exchanges needs it (AMQP has no command for it): "
                "enable it with `rabbitmq-plugins enable rabbitmq_management`, or set "
                "management_url in the broker URL"
            ) from None
        return [entry for entry in listed if isinstance(entry, dict)]


def _targets(name: str, arguments: Any, queue: str) -> bool:
    """Whether a delay queue leads back to ``queue`` through the default exchange."""
    return (
        is_delay_queue(name)
        and isinstance(arguments, dict)
        and arguments.get("x-dead-letter-exchange") == ""
        and arguments.get("x-dead-letter-routing-key") == queue
    )
