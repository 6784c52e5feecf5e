"""Exchanges: direct, fanout, topic and headers routing; bindings; alternate exchanges."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from conveyor import Binding, Broker, Capability, ExchangeSpec, ExchangeType, Message, QueueSpec
from conveyor.errors import ConfigError, ExchangeNotFound, QueueNotFound, Unroutable
from tests.conformance.helpers import receive_bodies

EXCHANGES = (Capability.QUEUES, Capability.EXCHANGES)


async def declare_queues(broker: Broker, *names: str) -> None:
    for queue in names:
        await broker.declare_queue(QueueSpec(queue))


async def publish_keys(broker: Broker, exchange: str, *routing_keys: str) -> list[int]:
    """Publish one message per routing key (its body is the key); return queues reached."""
    return [
        await broker.publish(Message(key.encode(), routing_key=key), exchange=exchange)
        for key in routing_keys
    ]


async def publish_headers(
    broker: Broker, exchange: str, *header_sets: Mapping[str, Any]
) -> list[int]:
    return [
        await broker.publish(Message(b"%d" % i, headers=headers), exchange=exchange)
        for i, headers in enumerate(header_sets)
    ]


# direct


@pytest.mark.needs(*EXCHANGES)
async def test_direct_exchange_routes_by_exact_routing_key(broker: Broker, name: str) -> None:
    ex, q1, q2 = name, f"{name}.q1", f"{name}.q2"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.DIRECT))
    await declare_queues(broker, q1, q2)
    await broker.bind(Binding(ex, q1, routing_key="red"))
    await broker.bind(Binding(ex, q2, routing_key="green"))

    assert await publish_keys(broker, ex, "red", "green", "blue", "red.dark") == [1, 1, 0, 0]

    assert await receive_bodies(broker, q1) == [b"red"]
    assert await receive_bodies(broker, q2) == [b"green"]


@pytest.mark.needs(*EXCHANGES, Capability.ROUTE_COUNTS)
async def test_direct_exchange_delivers_once_per_queue_bound_with_the_key(
    broker: Broker, name: str
) -> None:
    ex, q1, q2 = name, f"{name}.q1", f"{name}.q2"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.DIRECT))
    await declare_queues(broker, q1, q2)
    for queue in (q1, q2):
        await broker.bind(Binding(ex, queue, routing_key="red"))
    await broker.bind(Binding(ex, q1, routing_key="red"))  # binding again is a no-op

    assert await publish_keys(broker, ex, "red") == [2]

    assert await receive_bodies(broker, q1) == [b"red"]
    assert await receive_bodies(broker, q2) == [b"red"]


# fanout


@pytest.mark.needs(*EXCHANGES, Capability.ROUTE_COUNTS)
async def test_fanout_exchange_routes_to_every_bound_queue_whatever_the_key(
    broker: Broker, name: str
) -> None:
    ex, queues = name, [f"{name}.q{i}" for i in range(3)]
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.FANOUT))
    await declare_queues(broker, *queues)
    for queue in queues:
        await broker.bind(Binding(ex, queue, routing_key="ignored"))

    assert await publish_keys(broker, ex, "anything") == [3]

    for queue in queues:
        assert await receive_bodies(broker, queue) == [b"anything"]


# topic


@pytest.mark.needs(*EXCHANGES)
async def test_topic_star_matches_exactly_one_word(broker: Broker, name: str) -> None:
    ex, queue = name, f"{name}.q"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.TOPIC))
    await declare_queues(broker, queue)
    await broker.bind(Binding(ex, queue, routing_key="stock.*.nyse"))

    routed = await publish_keys(
        broker, ex, "stock.ibm.nyse", "stock.nyse", "stock.ibm.x.nyse", "stock.ibm.nasdaq"
    )

    assert routed == [1, 0, 0, 0]
    assert await receive_bodies(broker, queue) == [b"stock.ibm.nyse"]


@pytest.mark.needs(*EXCHANGES)
async def test_topic_hash_matches_zero_or_more_words(broker: Broker, name: str) -> None:
    ex, queue = name, f"{name}.q"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.TOPIC))
    await declare_queues(broker, queue)
    await broker.bind(Binding(ex, queue, routing_key="audit.#"))

    routed = await publish_keys(broker, ex, "audit", "audit.login", "audit.login.failed", "auditx")

    assert routed == [1, 1, 1, 0]
    assert await receive_bodies(broker, queue) == [
        b"audit",
        b"audit.login",
        b"audit.login.failed",
    ]


@pytest.mark.needs(*EXCHANGES)
async def test_topic_hash_in_the_middle_and_at_the_start(broker: Broker, name: str) -> None:
    ex, middle, start = name, f"{name}.middle", f"{name}.start"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.TOPIC))
    await declare_queues(broker, middle, start)
    await broker.bind(Binding(ex, middle, routing_key="a.#.z"))
    await broker.bind(Binding(ex, start, routing_key="#.error"))

    routed = await publish_keys(broker, ex, "a.z", "a.b.c.z", "a.b", "error", "x.y.error")

    assert routed == [1, 1, 0, 1, 1]
    assert await receive_bodies(broker, middle) == [b"a.z", b"a.b.c.z"]
    assert await receive_bodies(broker, start) == [b"error", b"x.y.error"]


@pytest.mark.needs(*EXCHANGES)
async def test_topic_message_matching_several_bindings_of_a_queue_arrives_once(
    broker: Broker, name: str
) -> None:
    ex, queue = name, f"{name}.q"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.TOPIC))
    await declare_queues(broker, queue)
    await broker.bind(Binding(ex, queue, routing_key="a.*"))
    await broker.bind(Binding(ex, queue, routing_key="#"))

    assert await publish_keys(broker, ex, "a.b") == [1]

    assert await receive_bodies(broker, queue) == [b"a.b"]


@pytest.mark.needs(*EXCHANGES)
async def test_topic_empty_routing_key_has_no_words(broker: Broker, name: str) -> None:
    ex, star, hash_, empty = name, f"{name}.star", f"{name}.hash", f"{name}.empty"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.TOPIC))
    await declare_queues(broker, star, hash_, empty)
    await broker.bind(Binding(ex, star, routing_key="*"))
    await broker.bind(Binding(ex, hash_, routing_key="#"))
    await broker.bind(Binding(ex, empty, routing_key=""))

    await publish_keys(broker, ex, "", "a")

    assert await receive_bodies(broker, star) == [b"a"]
    assert await receive_bodies(broker, hash_) == [b"", b"a"]
    assert await receive_bodies(broker, empty) == [b""]


# headers


@pytest.mark.needs(*EXCHANGES)
async def test_headers_exchange_with_x_match_all_needs_every_header(
    broker: Broker, name: str
) -> None:
    ex, queue = name, f"{name}.q"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.HEADERS))
    await declare_queues(broker, queue)
    arguments = {"x-match": "all", "format": "pdf", "type": "report"}
    await broker.bind(Binding(ex, queue, arguments=arguments))

    routed = await publish_headers(
        broker,
        ex,
        {"format": "pdf", "type": "report", "extra": 1},
        {"format": "pdf"},
        {"format": "pdf", "type": "log"},
    )

    assert routed == [1, 0, 0]
    assert await receive_bodies(broker, queue) == [b"0"]


@pytest.mark.needs(*EXCHANGES)
async def test_headers_exchange_with_x_match_any_needs_one_header(
    broker: Broker, name: str
) -> None:
    ex, queue = name, f"{name}.q"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.HEADERS))
    await declare_queues(broker, queue)
    arguments = {"x-match": "any", "format": "pdf", "type": "report"}
    await broker.bind(Binding(ex, queue, arguments=arguments))

    routed = await publish_headers(
        broker, ex, {"format": "pdf"}, {"type": "report"}, {"format": "zip"}, {}
    )

    assert routed == [1, 1, 0, 0]
    assert await receive_bodies(broker, queue) == [b"0", b"1"]


@pytest.mark.needs(*EXCHANGES)
async def test_headers_exchange_compares_values_by_amqp_type(broker: Broker, name: str) -> None:
    ex, integer, boolean = name, f"{name}.int", f"{name}.bool"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.HEADERS))
    await declare_queues(broker, integer, boolean)
    await broker.bind(Binding(ex, integer, arguments={"level": 1}))
    await broker.bind(Binding(ex, boolean, arguments={"level": True}))

    routed = await publish_headers(
        broker, ex, {"level": 1}, {"level": True}, {"level": 1.0}, {"level": "1"}
    )

    assert routed == [1, 1, 1, 0]
    assert await receive_bodies(broker, integer) == [b"0", b"2"]
    assert await receive_bodies(broker, boolean) == [b"1"]


@pytest.mark.needs(*EXCHANGES)
async def test_headers_binding_argument_without_a_value_asks_only_for_the_header(
    broker: Broker, name: str
) -> None:
    ex, queue = name, f"{name}.q"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.HEADERS))
    await declare_queues(broker, queue)
    await broker.bind(Binding(ex, queue, arguments={"trace": None}))

    routed = await publish_headers(broker, ex, {"trace": "abc"}, {"trace": 7}, {"other": 1})

    assert routed == [1, 1, 0]
    assert await receive_bodies(broker, queue) == [b"0", b"1"]


@pytest.mark.needs(*EXCHANGES)
async def test_headers_with_x_modes_compare_x_arguments_and_bare_any_matches_nothing(
    broker: Broker, name: str
) -> None:
    ex, with_x, plain, nothing = name, f"{name}.with-x", f"{name}.plain", f"{name}.nothing"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.HEADERS))
    await declare_queues(broker, with_x, plain, nothing)
    await broker.bind(Binding(ex, with_x, arguments={"x-match": "all-with-x", "x-tenant": "t1"}))
    await broker.bind(Binding(ex, plain, arguments={"x-match": "all", "x-tenant": "t1"}))
    await broker.bind(Binding(ex, nothing, arguments={"x-match": "any"}))

    await publish_headers(broker, ex, {"x-tenant": "t1"}, {"x-tenant": "t2"})

    assert await receive_bodies(broker, with_x) == [b"0"]
    assert await receive_bodies(broker, plain) == [b"0", b"1"]
    assert await receive_bodies(broker, nothing) == []


# bindings


@pytest.mark.needs(*EXCHANGES)
async def test_unbind_stops_routing(broker: Broker, name: str) -> None:
    ex, queue = name, f"{name}.q"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.DIRECT))
    await declare_queues(broker, queue)
    binding = Binding(ex, queue, routing_key="k")
    await broker.bind(binding)
    assert await publish_keys(broker, ex, "k") == [1]

    await broker.unbind(binding)

    assert await publish_keys(broker, ex, "k") == [0]
    assert await receive_bodies(broker, queue) == [b"k"]


@pytest.mark.needs(*EXCHANGES)
async def test_unbind_leaves_other_bindings(broker: Broker, name: str) -> None:
    ex, queue = name, f"{name}.q"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.DIRECT))
    await declare_queues(broker, queue)
    await broker.bind(Binding(ex, queue, routing_key="k1"))
    await broker.bind(Binding(ex, queue, routing_key="k2"))

    await broker.unbind(Binding(ex, queue, routing_key="k1"))

    assert await publish_keys(broker, ex, "k1", "k2") == [0, 1]


@pytest.mark.needs(*EXCHANGES)
async def test_binding_to_a_missing_queue_raises_queue_not_found(broker: Broker, name: str) -> None:
    await broker.declare_exchange(ExchangeSpec(name, ExchangeType.DIRECT))

    with pytest.raises(QueueNotFound):
        await broker.bind(Binding(name, f"{name}.missing", routing_key="k"))


@pytest.mark.needs(*EXCHANGES)
async def test_binding_from_a_missing_exchange_raises_exchange_not_found(
    broker: Broker, name: str
) -> None:
    await declare_queues(broker, name)

    with pytest.raises(ExchangeNotFound):
        await broker.bind(Binding(f"{name}.missing", name, routing_key="k"))


@pytest.mark.needs(*EXCHANGES)
async def test_deleting_a_queue_removes_its_bindings(broker: Broker, name: str) -> None:
    ex, queue = name, f"{name}.q"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.FANOUT))
    await declare_queues(broker, queue)
    await broker.bind(Binding(ex, queue))

    await broker.delete_queue(queue)
    await declare_queues(broker, queue)

    assert await publish_keys(broker, ex, "k") == [0]
    assert (await broker.queue_stats(queue)).at_least == 0


# exchanges


@pytest.mark.needs(*EXCHANGES)
async def test_publish_to_a_missing_exchange_raises_exchange_not_found(
    broker: Broker, name: str
) -> None:
    with pytest.raises(ExchangeNotFound):
        await broker.publish(Message(b"x", routing_key="k"), exchange=f"{name}.missing")


@pytest.mark.needs(*EXCHANGES, Capability.EXACT_STATS)
async def test_unroutable_message_is_dropped_and_counted_as_reaching_no_queue(
    broker: Broker, name: str
) -> None:
    ex, queue = name, f"{name}.q"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.DIRECT))
    await declare_queues(broker, queue)
    await broker.bind(Binding(ex, queue, routing_key="k"))

    assert await publish_keys(broker, ex, "other") == [0]
    assert (await broker.queue_stats(queue)).at_least == 0


@pytest.mark.needs(*EXCHANGES, Capability.ATOMIC_BATCH_PUBLISH)
async def test_mandatory_unroutable_publish_raises_and_stores_nothing(
    broker: Broker, name: str
) -> None:
    ex, queue = name, f"{name}.q"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.DIRECT))
    await declare_queues(broker, queue)
    await broker.bind(Binding(ex, queue, routing_key="k"))
    batch = [Message(b"routable", routing_key="k"), Message(b"lost", routing_key="other")]

    with pytest.raises(Unroutable) as raised:
        await broker.publish_batch(batch, exchange=ex, mandatory=True)

    assert (raised.value.exchange, raised.value.routing_key) == (ex, "other")
    assert (await broker.queue_stats(queue)).at_least == 0


@pytest.mark.needs(*EXCHANGES)
async def test_alternate_exchange_receives_unroutable_messages(broker: Broker, name: str) -> None:
    ex, ae, main, lost = name, f"{name}.ae", f"{name}.main", f"{name}.lost"
    await broker.declare_exchange(ExchangeSpec(ae, ExchangeType.FANOUT))
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.DIRECT, alternate_exchange=ae))
    await declare_queues(broker, main, lost)
    await broker.bind(Binding(ex, main, routing_key="k"))
    await broker.bind(Binding(ae, lost))

    assert await publish_keys(broker, ex, "k", "other") == [1, 1]

    assert await receive_bodies(broker, main) == [b"k"]
    assert await receive_bodies(broker, lost) == [b"other"]


@pytest.mark.needs(*EXCHANGES)
async def test_a_missing_alternate_exchange_leaves_a_message_unroutable_not_refused(
    broker: Broker, name: str
) -> None:
    await broker.declare_exchange(
        ExchangeSpec(name, ExchangeType.DIRECT, alternate_exchange=f"{name}.missing")
    )

    assert await publish_keys(broker, name, "nowhere") == [0]
    with pytest.raises(Unroutable):
        await broker.publish(Message(b"m", routing_key="nowhere"), exchange=name, mandatory=True)


@pytest.mark.needs(*EXCHANGES)
async def test_alternate_exchange_satisfies_a_mandatory_publish(broker: Broker, name: str) -> None:
    ex, ae, lost = name, f"{name}.ae", f"{name}.lost"
    await broker.declare_exchange(ExchangeSpec(ae, ExchangeType.FANOUT))
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.DIRECT, alternate_exchange=ae))
    await declare_queues(broker, lost)
    await broker.bind(Binding(ae, lost))

    assert await broker.publish(Message(b"x", routing_key="k"), exchange=ex, mandatory=True) == 1
    assert await receive_bodies(broker, lost) == [b"x"]


@pytest.mark.needs(*EXCHANGES)
async def test_declaring_an_exchange_again_the_same_way_keeps_its_bindings(
    broker: Broker, name: str
) -> None:
    ex, queue = name, f"{name}.q"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.TOPIC))
    await declare_queues(broker, queue)
    await broker.bind(Binding(ex, queue, routing_key="a.*"))

    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.TOPIC))

    assert await publish_keys(broker, ex, "a.b") == [1]


@pytest.mark.needs(*EXCHANGES)
async def test_redeclaring_an_exchange_with_another_type_raises_config_error(
    broker: Broker, name: str
) -> None:
    ex, queue = name, f"{name}.q"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.DIRECT))
    await declare_queues(broker, queue)
    await broker.bind(Binding(ex, queue, routing_key="k"))

    with pytest.raises(ConfigError):
        await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.FANOUT))

    assert await publish_keys(broker, ex, "k", "other") == [1, 0]  # still direct


@pytest.mark.needs(*EXCHANGES)
async def test_delete_exchange_removes_its_bindings(broker: Broker, name: str) -> None:
    ex, queue = name, f"{name}.q"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.FANOUT))
    await declare_queues(broker, queue)
    await broker.bind(Binding(ex, queue))

    await broker.delete_exchange(ex)

    with pytest.raises(ExchangeNotFound):
        await publish_keys(broker, ex, "k")
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.FANOUT))
    assert await publish_keys(broker, ex, "k") == [0]


@pytest.mark.needs(*EXCHANGES)
async def test_delete_exchange_keeps_queues_and_their_messages(broker: Broker, name: str) -> None:
    ex, queue = name, f"{name}.q"
    await broker.declare_exchange(ExchangeSpec(ex, ExchangeType.FANOUT))
    await declare_queues(broker, queue)
    await broker.bind(Binding(ex, queue))
    await publish_keys(broker, ex, "k")

    await broker.delete_exchange(ex)

    assert await receive_bodies(broker, queue) == [b"k"]
