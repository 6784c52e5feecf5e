"""Dramatiq on Redis (defaults: a process per core x 8 threads) or RabbitMQ (1 x 8).

The broker comes from ``CONVEYOR_BENCH_BACKEND`` at import, in the driver and in the
workers alike (``dramatiq bench.peers.dramatiq_peer``). Default middleware, no results.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import cast

import dramatiq

from bench.peers import (
    BACKEND_ENV,
    RABBITMQ_URL,
    REDIS_URL,
    TOKEN_ENV,
    delete_rabbitmq,
    delete_redis_keys,
    rabbitmq_ready,
)

TOKEN = os.environ.get(TOKEN_ENV, "manual")
BACKEND = os.environ.get(BACKEND_ENV, "redis")
QUEUE = f"bench-dramatiq-{TOKEN}"
NAMESPACE = f"dramatiq-{TOKEN}"
THREADS = 8

if BACKEND == "rabbitmq":
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker: dramatiq.Broker = RabbitmqBroker(url=RABBITMQ_URL)
    PROCESSES = 1
else:
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=REDIS_URL, namespace=NAMESPACE)
    PROCESSES = os.cpu_count() or 1  # Dramatiq's default
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop() -> None:
    pass


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def mark(path: str) -> None:
    Path(path).write_text(repr(time.time()))


class Client:
    def send_marker(self, path: str) -> None:
        mark.send(path)

    def enqueue(self, count: int) -> float:
        send = noop.send
        started = time.perf_counter()
        for _ in range(count):
            send()
        return time.perf_counter() - started

    def depth(self) -> int | None:
        if BACKEND == "rabbitmq":
            return rabbitmq_ready(QUEUE)
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        try:  # a message leaves the .msgs hash when it is acked, after it ran
            return cast("int", client.hlen(f"{NAMESPACE}:{QUEUE}.msgs"))
        finally:
            client.close()

    def worker_commands(self) -> list[list[str]]:
        dramatiq_cli = str(Path(sys.executable).with_name("dramatiq"))
        arguments = f"bench.peers.dramatiq_peer --queues {QUEUE} -p {PROCESSES} -t {THREADS}"
        return [[dramatiq_cli, *arguments.split()]]

    def cleanup(self) -> None:
        broker.close()
        if BACKEND == "rabbitmq":
            delete_rabbitmq([QUEUE, f"{QUEUE}.DQ", f"{QUEUE}.XQ"], [])
        else:
            delete_redis_keys(TOKEN)
