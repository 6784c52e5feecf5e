"""How exchanges pick queues for a message: RabbitMQ's four exchange types. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any, Protocol

from conveyor.errors import ConfigError, ExchangeNotFound, Unroutable


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


class Exchange(Protocol):
    """An exchange as routing sees it; ``type`` None is the default exchange, which routes
    by routing key to the queue of that name."""

    @property
    def type(self) -> ExchangeType | None: ...

    @property
    def routes(self) -> Iterable[Route]: ...

    @property
    def alternate(self) -> str | None: ...


def route(
    exchanges: Mapping[str, Exchange],
    queues: Container[str],
    exchange: str,
    routing_key: str,
    headers: Mapping[str, Any],
    *,
    mandatory: bool,
) -> tuple[list[str], str | None]:
    """The queues a message reaches, in name order, following alternate exchanges when
    none matches.

    Returns the queue names and, when there are none, the exchange to count as unroutable.
    An alternate exchange that does not exist is passed over as RabbitMQ does: the
    message is unroutable, not refused. A missing ``exchange`` raises ExchangeNotFound;
    with ``mandatory``, a message no queue takes raises Unroutable.
    """
    seen: set[str] = set()
    name = exchange
    while name not in seen:
        seen.add(name)
        stored = exchanges.get(name)
        if stored is None and name != exchange:
            break
        if stored is None:
            raise ExchangeNotFound(name)
        if stored.type is None:
            targets = [routing_key] if routing_key in queues else []
        else:
            names = matching_queues(stored.type, stored.routes, routing_key, headers)
            targets = sorted(queue for queue in names if queue in queues)
        if targets:
            return targets, None
        if stored.alternate is None:
            break
        name = stored.alternate
    if mandatory:
        raise Unroutable(exchange, routing_key)
    return [], exchange


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
        words = _words(routing_key)
        return {route.queue for route in routes if _topic_pattern(route.routing_key).matches(words)}
    return {route.queue for route in routes if headers_match(route.arguments or {}, headers)}


def topic_matches(pattern: str, routing_key: str) -> bool:
    """True if a topic binding pattern matches a routing key.

    Both are dot-separated words; in the pattern ``*`` stands for exactly one word and
    ``#`` for zero or more words (``a.#`` matches ``a``, ``a.b`` and ``a.b.c``). The empty
    key has no words, as in RabbitMQ: ``#`` matches it and ``*`` does not.
    """
    return _topic_pattern(pattern).matches(_words(routing_key))


def _words(key: str) -> tuple[str, ...]:
    return tuple(key.split(".")) if key else ()


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
        self._words = _words(pattern)
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


_MATCH_MODES = ("all", "any", "all-with-x", "any-with-x")


def headers_match(arguments: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
    """RabbitMQ's headers exchange rule for one binding.

    ``x-match`` is ``all`` (default: every binding argument matches the header of that
    name) or ``any`` (at least one does; so ``any`` with no arguments matches nothing).
    Arguments named ``x-...`` are left out, except under ``all-with-x`` and ``any-with-x``.
    An argument without a value (None, AMQP's void) asks only that the header be there; any
    other is equal as RabbitMQ compares: same type class (numbers, booleans, strings,
    arrays, tables) and same value, so ``1`` matches ``1.0`` but not ``True``.
    """
    mode = arguments.get("x-match", "all")
    with_x = mode.endswith("-with-x")
    hits = (
        name in headers and (value is None or amqp_equal(value, headers[name]))
        for name, value in arguments.items()
        if name != "x-match" and (with_x or not name.startswith("x-"))
    )
    return any(hits) if mode.startswith("any") else all(hits)


def amqp_equal(left: Any, right: Any) -> bool:
    """Equal as AMQP field values: Python's equality, but only within one type class."""
    if _type_class(left) != _type_class(right):
        return False
    if isinstance(left, list | tuple):
        return len(left) == len(right) and all(map(amqp_equal, left, right))
    if isinstance(left, Mapping):
        return left.keys() == right.keys() and all(amqp_equal(left[k], right[k]) for k in left)
    if isinstance(left, str | bytes):
        return _as_bytes(left) == _as_bytes(right)
    return bool(left == right)


_TYPE_CLASSES: tuple[tuple[str, Any], ...] = (
    ("bool", bool),  # before numbers: a bool is an int to Python, not to AMQP
    ("number", int | float),
    ("string", str | bytes),
    ("array", list | tuple),
    ("table", Mapping),
)


def _type_class(value: Any) -> str:
    for name, kind in _TYPE_CLASSES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def check_headers_arguments(arguments: Mapping[str, Any]) -> Mapping[str, Any]:
    mode = arguments.get("x-match", "all")
    if mode not in _MATCH_MODES:
        raise ConfigError(f"x-match must be one of {', '.join(_MATCH_MODES)}, not {mode!r}")
    return arguments
