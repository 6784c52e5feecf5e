"""The peers of the ``tasks`` suite: the job libraries a user would pick instead of Conveyor.

One small module per library (``celery_peer``, ``rq_peer``, ``dramatiq_peer``, ``huey_peer``,
``arq_peer``) holds its no-op task, its marker task, the commands that start its workers and
a ``Client`` that enqueues. Each peer run happens in a child process,
``python -m bench.peers NAME COUNT WORKDIR`` (see ``bench.peers.driver``), so the libraries'
global state (Dramatiq's broker, Celery's app) never meets another's, and the parent only
reads one line of JSON.

Names are unique per run (``CONVEYOR_BENCH_TOKEN`` goes into every queue name, key prefix
and job id); Redis peers use database 15 and delete only the keys holding that token;
RabbitMQ peers delete the queues and exchanges they declared. Only 127.0.0.1 is contacted.

This module imports no peer library, so the suite and the tests can read the registry
without them installed.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Literal, Protocol, cast

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_DB = 15
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
RABBITMQ_HOST = "127.0.0.1"
RABBITMQ_PORT = 5672
RABBITMQ_URL = f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/%2F"

TOKEN_ENV = "CONVEYOR_BENCH_TOKEN"
"""Unique per peer run: part of every queue name, key prefix and job id."""
BACKEND_ENV = "CONVEYOR_BENCH_BACKEND"
"""``redis`` or ``rabbitmq``, for the libraries that speak both."""

Backend = Literal["redis", "rabbitmq"]


@dataclass(frozen=True, slots=True)
class Peer:
    """One library on one server, in its best documented configuration (PERFORMANCE.md)."""

    name: str
    """The part of the figure names: ``peer_<name>_e2e_per_s``."""
    module: str
    library: str
    """What must be importable for the peer to run."""
    backend: Backend
    configuration: str
    slow: bool = False
    """Hundreds of tasks per second: the suite gives it fewer tasks."""

    @property
    def port(self) -> int:
        return REDIS_PORT if self.backend == "redis" else RABBITMQ_PORT


PEERS: tuple[Peer, ...] = (
    Peer(
        "celery_rabbitmq",
        "bench.peers.celery_peer",
        "celery",
        "rabbitmq",
        "Celery, RabbitMQ, 2 worker processes -P solo, prefetch multiplier 64, acks early, "
        "ignore_result and no result backend, no gossip/mingle/heartbeat/events",
    ),
    Peer(
        "dramatiq_redis",
        "bench.peers.dramatiq_peer",
        "dramatiq",
        "redis",
        "Dramatiq, Redis, defaults: 2 processes (one per core) x 8 threads",
    ),
    Peer(
        "dramatiq_rabbitmq",
        "bench.peers.dramatiq_peer",
        "dramatiq",
        "rabbitmq",
        "Dramatiq, RabbitMQ, 1 process x 8 threads",
    ),
    Peer(
        "huey_redis",
        "bench.peers.huey_peer",
        "huey",
        "redis",
        "Huey, RedisHuey (blocking pop), 2 worker processes (-k process -w 2), results off",
    ),
    Peer(
        "rq_redis",
        "bench.peers.rq_peer",
        "rq",
        "redis",
        "RQ, Redis, 2 SimpleWorker processes (no fork per job), result_ttl=0",
        slow=True,
    ),
    Peer(
        "arq_redis",
        "bench.peers.arq_peer",
        "arq",
        "redis",
        "arq, Redis, 2 worker processes, max_jobs 10 (default), keep_result=0, quiet logs",
        slow=True,
    ),
)


def peer_named(name: str) -> Peer:
    for peer in PEERS:
        if peer.name == name:
            return peer
    raise KeyError(f"no peer named {name!r}; known: {', '.join(p.name for p in PEERS)}")


def server_listening(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port (a probe, nothing sent)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Client(Protocol):
    """What the driver needs of a peer module's ``Client``."""

    def send_marker(self, path: str) -> None:
        """Enqueue the task that writes ``time.time()`` to ``path`` when it runs."""

    def enqueue(self, count: int) -> float:
        """Enqueue ``count`` no-op tasks one call each; the seconds the calls took."""

    def depth(self) -> int | None:
        """Tasks not yet finished, or None when the library cannot tell cheaply."""

    def worker_commands(self) -> list[list[str]]:
        """One command line per worker process to start."""

    def cleanup(self) -> None:
        """Delete this run's queues and keys, and close connections."""


# helpers the peer modules share (each imports its client library lazily)


def delete_redis_keys(token: str, url: str = REDIS_URL) -> int:
    """Delete the keys in database 15 (or ``url``'s) whose names hold ``token``; how many
    were deleted."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"*{token}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += cast("int", client.delete(*batch))
                batch = []
        if batch:
            deleted += cast("int", client.delete(*batch))
        return deleted
    finally:
        client.close()


def delete_rabbitmq(queues: list[str], exchanges: list[str]) -> None:
    """Delete these queues and exchanges (missing ones are fine)."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        for queue in queues:
            channel = connection.channel()
            channel.queue_delete(queue)
            channel.close()
        for exchange in exchanges:
            channel = connection.channel()
            channel.exchange_delete(exchange)
            channel.close()
    finally:
        connection.close()


def rabbitmq_ready(queue: str) -> int:
    """Messages ready in a RabbitMQ queue (not counting those prefetched by consumers)."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        declared = connection.channel().queue_declare(queue, passive=True)
        return int(declared.method.message_count)
    finally:
        connection.close()
