import pytest

from conveyor import Binding, Capability, ExchangeSpec, ExchangeType, Message, QueueSpec
from conveyor.brokers.base import Broker
from conveyor.errors import ExchangeNotFound


@pytest.mark.needs(Capability.EXCHANGES, Capability.EXACT_STATS)
async def test_exchange_stats_show_bindings_and_count_unroutable_drops(
    broker: Broker, name: str
) -> None:
    exchange = f"{name}.x"
    await broker.declare_exchange(ExchangeSpec(exchange, ExchangeType.TOPIC))
    await broker.declare_queue(QueueSpec(name))
    await broker.bind(Binding(exchange, name, "order.*"))
    assert await broker.publish(Message(b"1", routing_key="order.created"), exchange=exchange) == 1
    assert await broker.publish(Message(b"2", routing_key="user.created"), exchange=exchange) == 0
    stats = await broker.exchange_stats(exchange)
    assert stats.type is ExchangeType.TOPIC
    assert stats.bindings == (Binding(exchange, name, "order.*"),)
    assert stats.unroutable == 1


@pytest.mark.needs(Capability.QUEUES, Capability.EXACT_STATS)
async def test_default_exchange_counts_messages_for_missing_queues(
    broker: Broker, name: str
) -> None:
    before = (await broker.exchange_stats("")).unroutable
    assert before is not None
    assert await broker.publish(Message(b"lost", routing_key=f"{name}.nowhere")) == 0
    assert (await broker.exchange_stats("")).unroutable == before + 1
    with pytest.raises(ExchangeNotFound):
        await broker.exchange_stats(f"{name}.missing")
