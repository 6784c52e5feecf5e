"""Routing against simple reference implementations, by property and by example."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from conveyor.errors import ConfigError, ExchangeNotFound, Unroutable
from conveyor.routing import (
    ExchangeType,
    Route,
    check_headers_arguments,
    check_topic_pattern,
    headers_match,
    matching_queues,
    route,
    topic_matches,
)

words = st.sampled_from(["a", "b", "c", "order", ""])
keys = st.lists(words, min_size=1, max_size=6).map(".".join)
patterns = st.lists(st.sampled_from(["a", "b", "order", "*", "#"]), min_size=1, max_size=6).map(
    ".".join
)


def recursive_topic_match(pattern: list[str], key: list[str]) -> bool:
    """The textbook recursive definition, as a second opinion."""
    if not pattern:
        return not key
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(recursive_topic_match(rest, key[i:]) for i in range(len(key) + 1))
    if not key:
        return False
    return (head in ("*", key[0])) and recursive_topic_match(rest, key[1:])


def words_of(key: str) -> list[str]:
    """RabbitMQ's split: the empty key has no words; "a." has two."""
    return key.split(".") if key else []


@given(patterns, keys)
def test_topic_matching_agrees_with_the_recursive_definition(pattern: str, key: str) -> None:
    expected = recursive_topic_match(words_of(pattern), words_of(key))
    assert topic_matches(pattern, key) is expected


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("#", "anything.at.all", True),
        ("#.c", "c", True),
        ("a.*", "a", False),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("*.b.#", "x.b", True),
        ("a.#.c", "a.c", True),
        ("a.#.c", "a.x.y.c", True),
        ("a.#.c", "a.x.y", False),
        ("order.created", "order.created", True),
        ("order.created", "order.deleted", False),
        ("*", "", False),
        ("#", "", True),
        ("", "", True),
        ("*", "a", True),
        ("", "a", False),
        ("a.*", "a.", True),
    ],
)
def test_topic_examples(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


def test_topic_pattern_with_wildcard_inside_a_word_is_refused() -> None:
    with pytest.raises(ConfigError, match="stand alone"):
        check_topic_pattern("a.b*")
    assert check_topic_pattern("a.*.#") == "a.*.#"


header_values = st.one_of(
    st.integers(0, 2), st.booleans(), st.sampled_from([0.0, 1.0, "x", "y", b"x"]), st.none()
)
header_maps = st.dictionaries(st.sampled_from(["k1", "k2", "x-k3"]), header_values, max_size=3)


def typed(value: Any) -> tuple[str, Any]:
    """A value as AMQP's type class and value: how RabbitMQ compares field values."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", float(value))
    if isinstance(value, bytes):
        return ("string", value.decode())
    if isinstance(value, str):
        return ("string", value)
    return (type(value).__name__, value)


def reference_headers_match(arguments: dict[str, Any], headers: dict[str, Any]) -> bool:
    mode = arguments.get("x-match", "all")
    pairs = {
        k: v
        for k, v in arguments.items()
        if k != "x-match" and (mode.endswith("-with-x") or not k.startswith("x-"))
    }
    hits = [k in headers and (v is None or typed(headers[k]) == typed(v)) for k, v in pairs.items()]
    return any(hits) if mode.startswith("any") else all(hits)


@example({"k1": None, "k2": "x"}, {"k2": b"x"}, "any")
@given(header_maps, header_maps, st.sampled_from([None, "all", "any", "all-with-x", "any-with-x"]))
def test_headers_matching_agrees_with_the_reference(
    arguments: dict[str, Any], headers: dict[str, Any], mode: str | None
) -> None:
    if mode is not None:
        arguments = {**arguments, "x-match": mode}
    assert headers_match(arguments, headers) is reference_headers_match(arguments, headers)


def test_headers_examples() -> None:
    assert headers_match({"x-match": "all", "a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3})
    assert not headers_match({"x-match": "all", "a": 1, "b": 2}, {"a": 1})
    assert headers_match({"x-match": "any", "a": 1, "b": 2}, {"b": 2})
    assert not headers_match({"x-match": "any", "a": 1}, {"a": 2})
    assert headers_match({}, {"anything": True})
    assert not headers_match({"x-match": "any"}, {"anything": True})
    assert not headers_match({"a": 1}, {"a": True})
    assert not headers_match({"a": True}, {"a": 1})
    assert headers_match({"a": 1}, {"a": 1.0})
    assert headers_match({"a": "x"}, {"a": b"x"})
    assert headers_match({"a": None}, {"a": "any value"})
    assert not headers_match({"a": None}, {"b": 1})
    assert headers_match({"a": [1, "x"]}, {"a": [1, "x"]})
    assert not headers_match({"a": [1]}, {"a": [True]})
    assert headers_match({"a": {"x": 1, "y": "z"}}, {"a": {"x": 1.0, "y": b"z"}})
    assert not headers_match({"a": {"x": 1}}, {"a": {"x": True}})
    assert not headers_match({"a": {"x": 1}}, {"a": {"x": 1, "y": 2}})
    assert headers_match({"x-match": "all", "x-tenant": "t1"}, {"x-tenant": "t2"})
    assert not headers_match({"x-match": "all-with-x", "x-tenant": "t1"}, {"x-tenant": "t2"})
    assert headers_match({"x-match": "any-with-x", "x-tenant": "t1"}, {"x-tenant": "t1"})
    assert not headers_match({"x-match": "any", "x-tenant": "t1"}, {"x-tenant": "t1"})
    with pytest.raises(ConfigError, match="x-match"):
        check_headers_arguments({"x-match": "some"})
    assert check_headers_arguments({"x-match": "any-with-x"}) == {"x-match": "any-with-x"}


def test_exchange_types_pick_their_queues() -> None:
    routes = [
        Route("q1", "order.created", {"x-match": "any", "region": "eu"}),
        Route("q2", "order.*", {"region": "us"}),
        Route("q3", "#"),
    ]
    assert matching_queues(ExchangeType.FANOUT, routes, "x", {}) == {"q1", "q2", "q3"}
    assert matching_queues(ExchangeType.DIRECT, routes, "order.created", {}) == {"q1"}
    assert matching_queues(ExchangeType.TOPIC, routes, "order.created", {}) == {"q1", "q2", "q3"}
    assert matching_queues(ExchangeType.TOPIC, routes, "user.created", {}) == {"q3"}
    assert matching_queues(ExchangeType.HEADERS, routes, "", {"region": "eu"}) == {"q1", "q3"}


@dataclass
class Exchange:
    type: ExchangeType | None
    routes: tuple[Route, ...] = ()
    alternate: str | None = None


EXCHANGES = {
    "": Exchange(None),
    "orders": Exchange(ExchangeType.DIRECT, (Route("paid", "paid"),), alternate="spill"),
    "spill": Exchange(ExchangeType.FANOUT, (Route("unrouted", ""),)),
    "ping": Exchange(ExchangeType.DIRECT, alternate="pong"),
    "pong": Exchange(ExchangeType.DIRECT, alternate="ping"),
    "lost": Exchange(ExchangeType.DIRECT, alternate="nowhere"),
}
QUEUES = {"paid", "unrouted"}


def test_route_follows_alternates_until_a_queue_takes_the_message() -> None:
    assert route(EXCHANGES, QUEUES, "orders", "paid", {}, mandatory=False) == (["paid"], None)
    assert route(EXCHANGES, QUEUES, "orders", "refunded", {}, mandatory=True) == (
        ["unrouted"],
        None,
    )
    assert route(EXCHANGES, QUEUES, "", "paid", {}, mandatory=False) == (["paid"], None)


def test_route_counts_a_cycle_or_a_missing_alternate_as_unroutable() -> None:
    assert route(EXCHANGES, QUEUES, "ping", "x", {}, mandatory=False) == ([], "ping")
    assert route(EXCHANGES, QUEUES, "lost", "x", {}, mandatory=False) == ([], "lost")
    assert route(EXCHANGES, QUEUES, "", "no-such-queue", {}, mandatory=False) == ([], "")
    with pytest.raises(Unroutable):
        route(EXCHANGES, QUEUES, "ping", "x", {}, mandatory=True)
    with pytest.raises(ExchangeNotFound):
        route(EXCHANGES, QUEUES, "missing", "x", {}, mandatory=False)
