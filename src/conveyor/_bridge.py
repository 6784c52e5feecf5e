"""A broker and result store living on the App's portal loop, used from another loop.

A store private to its connection (``memory://``) must have one connection per App, or a
job sent from sync code would never reach an async worker in the same process. The App
keeps that connection on its portal loop; async callers get these stand-ins, which run
every call there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from conveyor._portal import Portal
from conveyor.brokers.base import Broker
from conveyor.brokers.results import ResultStore


def _forwarding(name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        return await self._portal.acall(getattr(self._target, name)(*args, **kwargs))

    forward.__name__ = name
    return forward


def _coroutine_names(contract: type) -> list[str]:
    return [
        name
        for name, member in inspect.getmembers(contract, inspect.iscoroutinefunction)
        if not name.startswith("_")
    ]


class PortalResults(ResultStore):
    def __init__(self, target: ResultStore, portal: Portal) -> None:
        super().__init__(target.url)
        self._target = target
        self._portal = portal


class PortalBroker(Broker):
    def __init__(self, target: Broker, portal: Portal) -> None:
        super().__init__(target.url)
        self._target = target
        self._portal = portal
        self._results: PortalResults | None = None
        self.scheme = target.scheme  # type: ignore[misc]
        self.capabilities = target.capabilities  # type: ignore[misc]
        self.private_store = target.private_store  # type: ignore[misc]

    @property
    def location(self) -> str:
        return self._target.location

    def results(self) -> ResultStore:
        if self._results is None:
            target = self._target.results()
            self._results = PortalResults(target, self._portal)  # type: ignore[abstract]
        return self._results


for _name in _coroutine_names(ResultStore):
    setattr(PortalResults, _name, _forwarding(_name))
PortalResults.__abstractmethods__ = frozenset()
for _name in _coroutine_names(Broker):
    setattr(PortalBroker, _name, _forwarding(_name))
PortalBroker.__abstractmethods__ = frozenset()
