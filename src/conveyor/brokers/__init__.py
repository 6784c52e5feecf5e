"""Backends, chosen by the scheme of the broker URL and imported only when used."""

from __future__ import annotations

from importlib import import_module

from conveyor.brokers.base import Broker, Capability
from conveyor.errors import ConfigError
from conveyor.settings import BrokerURL

# scheme -> (module, class, extra to install)
_BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "sqlite": ("conveyor.brokers.embedded", "EmbeddedBroker", None),
    "memory": ("conveyor.brokers.embedded", "MemoryBroker", None),
}


def _backend_class(scheme: str) -> type[Broker]:
    module_name, class_name, extra = _BACKENDS[scheme]
    try:
        module = import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"the {scheme}:// backend needs extra packages: pip install 'conveyor[{extra}]'"
        ) from exc
    backend: type[Broker] = getattr(module, class_name)
    return backend


def open_broker(url: str) -> Broker:
    """The broker for ``url``, not yet connected (call ``connect()`` or use ``async with``)."""
    scheme = BrokerURL.parse(url).scheme
    if scheme not in _BACKENDS:
        raise ConfigError(
            f"unknown broker URL scheme {scheme!r}; known: {', '.join(sorted(_BACKENDS))}"
        )
    return _backend_class(scheme)(url)


def backends_with(capability: Capability) -> list[str]:
    """URL schemes of the installed backends that declare ``capability``."""
    found = []
    for scheme in sorted(_BACKENDS):
        try:
            backend = _backend_class(scheme)
        except ConfigError:
            continue
        if capability in backend.capabilities:
            found.append(f"{scheme}://")
    return found


__all__ = ["Broker", "Capability", "backends_with", "open_broker"]
