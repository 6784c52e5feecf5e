"""RQ on Redis: 2 ``SimpleWorker`` processes (no fork per job), results not kept.

Workers: ``rq worker -w rq.worker.SimpleWorker`` twice. Job ids carry the run's token so
that cleanup finds every key this run made.
"""

from __future__ import annotations

import os
import sys
import time
from itertools import count as counter
from pathlib import Path

from redis import Redis
from rq import Queue

from bench.peers import REDIS_URL, TOKEN_ENV, delete_redis_keys

TOKEN = os.environ.get(TOKEN_ENV, "manual")
QUEUE = f"bench-rq-{TOKEN}"
WORKERS = 2


def noop() -> None:
    pass


def mark(path: str) -> None:
    Path(path).write_text(repr(time.time()))


class Client:
    def __init__(self) -> None:
        self.redis = Redis.from_url(REDIS_URL)
        self.queue = Queue(QUEUE, connection=self.redis)
        self._ids = counter()

    def _job_id(self) -> str:
        return f"{TOKEN}-{next(self._ids)}"

    def send_marker(self, path: str) -> None:
        self.queue.enqueue(mark, path, result_ttl=0, job_id=self._job_id())

    def enqueue(self, count: int) -> float:
        enqueue = self.queue.enqueue
        started = time.perf_counter()
        for _ in range(count):
            enqueue(noop, result_ttl=0, job_id=self._job_id())
        return time.perf_counter() - started

    def depth(self) -> int | None:
        return int(self.queue.count)  # at most one job more runs in each worker

    def worker_commands(self) -> list[list[str]]:
        rq = str(Path(sys.executable).with_name("rq"))
        arguments = f"worker -w rq.worker.SimpleWorker -u {REDIS_URL} --logging_level WARNING -q"
        return [
            [rq, *arguments.split(), "-n", f"bench-rq-{TOKEN}-{number}", QUEUE]
            for number in range(WORKERS)
        ]

    def cleanup(self) -> None:
        self.redis.srem("rq:queues", self.queue.key)
        self.redis.close()
        delete_redis_keys(TOKEN)
