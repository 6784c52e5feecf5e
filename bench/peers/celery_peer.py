"""Celery on RabbitMQ, as PERFORMANCE.md measured its best: 2 solo workers, prefetch 64.

Workers: ``celery -A bench.peers.celery_peer worker -P solo`` twice. Results are ignored
and there is no result backend; late acks are off (the default); gossip, mingle, heartbeats,
task events and remote control are off, so a worker only consumes its queue.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from celery import Celery

from bench.peers import RABBITMQ_URL, TOKEN_ENV, delete_rabbitmq, rabbitmq_ready

TOKEN = os.environ.get(TOKEN_ENV, "manual")
QUEUE = f"bench-celery-{TOKEN}"
WORKERS = 2
PREFETCH_MULTIPLIER = 64

app = Celery("bench_celery", broker=RABBITMQ_URL)
app.conf.update(
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    task_ignore_result=True,
    result_backend=None,
    task_acks_late=False,
    worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
    worker_send_task_events=False,
    worker_enable_remote_control=False,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")
def noop() -> None:
    pass


@app.task(name="bench.mark")
def mark(path: str) -> None:
    Path(path).write_text(repr(time.time()))


class Client:
    # The workers are idle by then and the queue is deleted next; a warm shutdown would wait
    # up to 10 s for the event loop to wake up (it has no timers without heartbeats).
    STOP_SIGNAL = signal.SIGKILL

    def send_marker(self, path: str) -> None:
        mark.delay(path)

    def enqueue(self, count: int) -> float:
        delay = noop.delay
        started = time.perf_counter()
        for _ in range(count):
            delay()
        return time.perf_counter() - started

    def depth(self) -> int | None:
        return rabbitmq_ready(QUEUE)

    def worker_commands(self) -> list[list[str]]:
        celery = str(Path(sys.executable).with_name("celery"))
        arguments = (
            f"-A bench.peers.celery_peer worker -P solo -Q {QUEUE} -l WARNING"
            " --without-gossip --without-mingle --without-heartbeat"
        )
        return [
            [celery, *arguments.split(), "-n", f"w{number}-{TOKEN}@%h"] for number in range(WORKERS)
        ]

    def cleanup(self) -> None:
        app.close()
        delete_rabbitmq([QUEUE], [QUEUE])
