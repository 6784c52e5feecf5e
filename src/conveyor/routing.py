"""How exchanges pick queues for a message: RabbitMQ's four exchange types. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

from conveyor.errors import ConfigError


class ExchangeType(StrEnum):
    DIRECT = "direct"
    FANOUT = "fanout"
    TOPIC = "topic"
    HEADERS = "headers"


@dataclass(frozen=True, slots=True)
class Route:
    """One binding as routing sees it: where it leads and what it matches on."""

    queue: str
    routing_key: str = ""
    arguments: Mapping[str, Any] | None = None


def matching_queues(
    exchange_type: ExchangeType,
    routes: Iterable[Route],
    routing_key: str,
    headers: Mapping[str, Any],
) -> set[str]:
    """The queues a message reaches through an exchange of this type."""
    if exchange_type is ExchangeType.FANOUT:
        return {route.queue for route in routes}
    if exchange_type is ExchangeType.DIRECT:
        return {route.queue for route in routes if route.routing_key == routing_key}
    if exchange_type is ExchangeType.TOPIC:
        words = tuple(routing_key.split("."))
        return {route.queue for route in routes if _topic_pattern(route.routing_key).matches(words)}
    return {route.queue for route in routes if headers_match(route.arguments or {}, headers)}


def topic_matches(pattern: str, routing_key: str) -> bool:
    """True if a topic binding pattern matches a routing key.

    Both are dot-separated words; in the pattern ``*`` stands for exactly one word and
    ``#`` for zero or more words (``a.#`` matches ``a``, ``a.b`` and ``a.b.c``).
    """
    return _topic_pattern(pattern).matches(tuple(routing_key.split(".")))


def check_topic_pattern(pattern: str) -> str:
    for word in pattern.split("."):
        if word not in ("*", "#") and ("*" in word or "#" in word):
            raise ConfigError(
                f"topic pattern {pattern!r} mixes a wildcard into the word {word!r}; "
                "'*' and '#' must each stand alone between dots"
            )
    return pattern


class _TopicPattern:
    __slots__ = ("_exact", "_words")

    def __init__(self, pattern: str) -> None:
        self._words = tuple(pattern.split("."))
        self._exact = "*" not in self._words and "#" not in self._words

    def matches(self, key: tuple[str, ...]) -> bool:
        if self._exact:
            return self._words == key
        words = self._words
        # reachable[j]: the pattern prefix consumed so far can match key[:j]
        reachable = [True] + [False] * len(key)
        for word in words:
            if word == "#":
                for j in range(1, len(key) + 1):
                    reachable[j] = reachable[j] or reachable[j - 1]
            else:
                for j in range(len(key), 0, -1):
                    reachable[j] = reachable[j - 1] and (word == "*" or word == key[j - 1])
                reachable[0] = False
        return reachable[len(key)]


@lru_cache(maxsize=4096)
def _topic_pattern(pattern: str) -> _TopicPattern:
    return _TopicPattern(pattern)


def headers_match(arguments: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
    """RabbitMQ's headers exchange rule for one binding.

    ``x-match`` is ``all`` (default: every binding argument equals the header of that name)
    or ``any`` (at least one does). Arguments whose names start with ``x-`` are not compared.
    """
    mode = arguments.get("x-match", "all")
    pairs = [(name, value) for name, value in arguments.items() if not name.startswith("x-")]
    if mode == "any":
        return any(name in headers and headers[name] == value for name, value in pairs)
    return all(name in headers and headers[name] == value for name, value in pairs)


def check_headers_arguments(arguments: Mapping[str, Any]) -> Mapping[str, Any]:
    mode = arguments.get("x-match", "all")
    if mode not in ("all", "any"):
        raise ConfigError(f"x-match must be 'all' or 'any', not {mode!r}")
    return arguments
