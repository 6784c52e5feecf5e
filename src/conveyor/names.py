"""Validation of the names users give to queues, exchanges and routing keys. Pure."""

from __future__ import annotations

import re

from conveyor.errors import ConfigError

MAX_NAME_LENGTH = 255
DEAD_LETTER_SUFFIX = ".dlq"  # `orders` dead-letters to `orders.dlq` (queues and topics)
MAX_ROUTING_KEY_BYTES = 255
_NAME = re.compile(r"[A-Za-z0-9_.:\-]+")


def check_name(kind: str, name: object) -> str:
    """Return ``name`` if it is a valid queue/exchange/topic name, else raise ConfigError.

    Names are 1-255 characters of ASCII letters, digits and ``_ . : -``: safe in URLs,
    file names, metric labels and every backend's own naming rules.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{kind} name must be a non-empty string, not {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise ConfigError(
            f"{kind} name {name[:40]!r}... is {len(name)} characters; the limit is "
            f"{MAX_NAME_LENGTH}"
        )
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"{kind} name {name!r} has characters outside A-Z a-z 0-9 _ . : -; rename it"
        )
    return name


def check_routing_key(routing_key: object) -> str:
    if not isinstance(routing_key, str):
        raise ConfigError(f"routing key must be a string, not {type(routing_key).__name__}")
    if len(routing_key) > MAX_ROUTING_KEY_BYTES // 4 and (
        len(routing_key.encode()) > MAX_ROUTING_KEY_BYTES
    ):
        raise ConfigError(
            f"routing key {routing_key[:40]!r}... is over {MAX_ROUTING_KEY_BYTES} bytes; shorten it"
        )
    return routing_key
