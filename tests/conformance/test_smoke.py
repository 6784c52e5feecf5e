import pytest

from conveyor import Broker, Capability, Message, QueueSpec


@pytest.mark.needs(Capability.QUEUES)
async def test_published_message_is_received_once(broker: Broker, name: str) -> None:
    await broker.declare_queue(QueueSpec(name))
    assert await broker.publish(Message(b"hello", routing_key=name)) == 1
    (delivery,) = await broker.receive(name, max_messages=10)
    assert delivery.message.body == b"hello"
    assert await broker.receive(name) == []
    await broker.ack(delivery)
    assert (await broker.queue_stats(name)).at_least == 0
