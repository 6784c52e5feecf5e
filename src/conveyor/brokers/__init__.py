"""Backends, chosen by the scheme of a URL and imported only when used."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from conveyor.brokers.base import Broker
from conveyor.brokers.capabilities import DECLARED, Capability
from conveyor.errors import ConfigError
from conveyor.settings import BrokerURL

if TYPE_CHECKING:
    from conveyor.brokers.results import ResultStore

# scheme -> (module, class, extra to install)
_BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "sqlite": ("conveyor.brokers.embedded", "EmbeddedBroker", None),
    "memory": ("conveyor.brokers.embedded", "MemoryBroker", None),
    "amqp": ("conveyor.brokers.rabbitmq", "RabbitMQBroker", "rabbitmq"),
    "amqps": ("conveyor.brokers.rabbitmq", "RabbitMQBroker", "rabbitmq"),
    "kafka": ("conveyor.brokers.kafka", "KafkaBroker", "kafka"),
    "redis": ("conveyor.brokers.redis.broker", "RedisBroker", "redis"),
    "rediss": ("conveyor.brokers.redis.broker", "RedisBroker", "redis"),
    "unix": ("conveyor.brokers.redis.broker", "RedisBroker", "redis"),
}

# Result stores of their own, with no broker to open: scheme -> (module, class, extra).
_RESULT_STORES: dict[str, tuple[str, str, str | None]] = {
    "redis": ("conveyor.brokers.redis.results", "RedisResultStore", "redis"),
    "rediss": ("conveyor.brokers.redis.results", "RedisResultStore", "redis"),
    "unix": ("conveyor.brokers.redis.results", "RedisResultStore", "redis"),
}


def _load(scheme: str, entry: tuple[str, str, str | None]) -> Any:
    module_name, class_name, extra = entry
    try:
        module = import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"the {scheme}:// backend needs extra packages: pip install 'conveyor[{extra}]'"
        ) from exc
    return getattr(module, class_name)


def _scheme(url: str, known: dict[str, Any], what: str) -> str:
    scheme = BrokerURL.parse(url).scheme
    if scheme not in known:
        raise ConfigError(
            f"unknown {what} URL scheme {scheme!r}; known: {', '.join(sorted(known))}"
        )
    return scheme


def open_broker(url: str) -> Broker:
    """The broker for ``url``, not yet connected (call ``connect()`` or use ``async with``)."""
    scheme = _scheme(url, _BACKENDS, "broker")
    backend: type[Broker] = _load(scheme, _BACKENDS[scheme])
    return backend(url)


def open_results(url: str) -> ResultStore:
    """A result store of its own at ``url`` (``redis://``, or a broker URL whose backend
    keeps one, such as ``sqlite:///results.db``), not yet connected."""
    scheme = BrokerURL.parse(url).scheme
    if scheme not in _RESULT_STORES and Capability.RESULTS in DECLARED.get(scheme, frozenset()):
        return open_broker(url).results()
    scheme = _scheme(url, _RESULT_STORES, "results")
    store: type[ResultStore] = _load(scheme, _RESULT_STORES[scheme])
    return store(url)


def declared_capabilities(url: str) -> frozenset[Capability]:
    """What the backend for ``url`` declares, known without importing it."""
    return DECLARED[_scheme(url, _BACKENDS, "broker")]


def backends_with(capability: Capability) -> list[str]:
    """URL schemes of the backends that declare ``capability`` (nothing is imported)."""
    return [f"{scheme}://" for scheme in sorted(DECLARED) if capability in DECLARED[scheme]]


__all__ = [
    "Broker",
    "Capability",
    "backends_with",
    "declared_capabilities",
    "open_broker",
    "open_results",
]
