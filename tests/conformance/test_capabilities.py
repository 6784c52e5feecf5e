"""Capabilities: what a backend lacks it refuses by name; what it declares, this suite tests."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from conveyor import Broker, Capability, ExchangeSpec, Message, QueueSpec
from conveyor.brokers.stream_types import (
    CleanupPolicy,
    OffsetCommit,
    ProducerBatch,
    ProducerRecord,
    TopicConfig,
    TopicSpec,
)
from conveyor.brokers.types import Delivery
from conveyor.errors import NotSupported

SUITE = Path(__file__).parent


async def test_undeclared_capabilities_raise_not_supported_naming_them(broker: Broker) -> None:
    missing = [capability for capability in Capability if capability not in broker.capabilities]

    for capability in missing:
        with pytest.raises(NotSupported) as raised:
            broker.require(capability)
        assert raised.value.capability == capability.value
        assert capability.value in str(raised.value)
        assert all(isinstance(alternative, str) for alternative in raised.value.alternatives)


async def test_require_names_the_first_missing_capability_among_several(broker: Broker) -> None:
    declared = sorted(broker.capabilities)
    missing = [capability for capability in Capability if capability not in broker.capabilities]
    broker.require(*declared)  # everything declared passes
    if not missing:
        return

    with pytest.raises(NotSupported) as raised:
        broker.require(*declared, *missing)

    assert raised.value.capability == missing[0].value


def _delivery(name: str) -> Delivery:
    return Delivery(Message(b"x", routing_key=name), name, 1, None, None, 0)


COMPACTED = TopicConfig(cleanup_policy=CleanupPolicy.COMPACT)


def _representative(broker: Broker, capability: Capability, name: str) -> Awaitable[object]:
    """One call that only a backend declaring ``capability`` may accept."""
    calls: dict[Capability, Callable[[], Awaitable[object]]] = {
        Capability.QUEUES: lambda: broker.declare_queue(QueueSpec(name)),
        Capability.EXCHANGES: lambda: broker.declare_exchange(ExchangeSpec(name)),
        Capability.PRIORITIES: lambda: broker.declare_queue(QueueSpec(name, max_priority=5)),
        Capability.DELAYS: lambda: broker.publish(Message(b"x", routing_key=name), delay=1),
        Capability.TTL: lambda: broker.declare_queue(QueueSpec(name, message_ttl=5)),
        Capability.MAX_LENGTH: lambda: broker.declare_queue(QueueSpec(name, max_length=5)),
        Capability.DEAD_LETTER: lambda: broker.declare_queue(
            QueueSpec(name, dead_letter_exchange="")
        ),
        Capability.DELIVERY_LIMIT: lambda: broker.declare_queue(QueueSpec(name, delivery_limit=3)),
        Capability.LEASES: lambda: broker.extend_lease(_delivery(name), 1),
        Capability.LEASE_EXTENSION: lambda: broker.extend_lease(_delivery(name), 1),
        Capability.BROWSE: lambda: broker.browse(name),
        Capability.ATOMIC_SETTLE: lambda: broker.settle([]),
        Capability.RESULTS: _awaitable(broker.results),
        Capability.STREAMS: lambda: broker.create_topic(TopicSpec(name)),
        Capability.REPLAY: lambda: broker.create_topic(TopicSpec(name)),
        Capability.RETENTION: lambda: broker.enforce_retention(),
        Capability.COMPACTION: (
            (lambda: broker.create_topic(TopicSpec(name, config=COMPACTED)))
            if Capability.RETENTION in broker.capabilities
            else lambda: broker.enforce_retention()
        ),
        Capability.IDEMPOTENT_PRODUCE: lambda: broker.produce(
            name, [ProducerRecord(b"x")], batch=ProducerBatch("p", 0)
        ),
        Capability.TRANSACTIONAL_PRODUCE: lambda: broker.produce(
            name, [ProducerRecord(b"x")], commit=OffsetCommit("g", {})
        ),
        Capability.CONSUMER_GROUPS: lambda: broker.list_groups(),
        Capability.GROUP_COORDINATION: lambda: broker.join_group("g", [name]),
    }
    return calls[capability]()


def _awaitable(call: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    async def run() -> object:
        return call()

    return run


# Guarantees with no method of their own: refused by the methods they shape, if at all.
_BEHAVIOURAL = {
    Capability.EXACT_STATS,
    Capability.ROUTE_COUNTS,
    Capability.FENCED_ACKS,
    Capability.UNCOUNTED_RELEASE,
    Capability.ATOMIC_BATCH_PUBLISH,
}


async def test_a_method_of_each_undeclared_capability_raises_not_supported(
    broker: Broker, name: str
) -> None:
    for capability in sorted(set(Capability) - broker.capabilities - _BEHAVIOURAL):
        with pytest.raises(NotSupported) as raised:
            await _representative(broker, capability, name)
        assert raised.value.backend == broker.scheme, capability


@pytest.mark.needs(Capability.RESULTS)
async def test_the_brokers_own_result_store_shares_its_connection(broker: Broker) -> None:
    results = broker.results()
    assert results is broker.results()
    await results.ping()


def _needs_of_collected_tests(session: pytest.Session) -> set[Capability]:
    """Capabilities named by the ``needs`` markers of this suite's tests in the session."""
    needed: set[Capability] = set()
    for item in session.items:
        if item.path.parent == SUITE:
            for marker in item.iter_markers("needs"):
                needed.update(marker.args)
    return needed


def _needs_of_suite_modules() -> set[Capability]:
    """The same, read from every suite module: a run of one file or ``-k`` sees all tests."""
    needed: set[Capability] = set()
    for path in sorted(SUITE.glob("test_*.py")):
        module = importlib.import_module(f"tests.conformance.{path.stem}")
        module_marks = getattr(module, "pytestmark", [])  # a mark or a list of them
        marks = list(module_marks) if isinstance(module_marks, list) else [module_marks]
        for attribute, value in vars(module).items():
            if attribute.startswith("test_") and callable(value):
                marks.extend(getattr(value, "pytestmark", []))
        for mark in marks:
            if mark.name == "needs":
                needed.update(mark.args)
    return needed


async def test_every_declared_capability_is_exercised_by_the_suite(
    broker: Broker, request: pytest.FixtureRequest
) -> None:
    needed = _needs_of_collected_tests(request.session) | _needs_of_suite_modules()

    untested = sorted(capability.value for capability in broker.capabilities - needed)

    assert not untested, f"{broker.scheme} declares {untested} but no conformance test needs them"
