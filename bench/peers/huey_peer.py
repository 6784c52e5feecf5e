"""Huey on Redis (RedisHuey, blocking pop), 2 worker processes, results not stored.

Workers: ``huey_consumer bench.peers.huey_peer.huey -k process -w 2``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from huey import RedisHuey

from bench.peers import REDIS_URL, TOKEN_ENV, delete_redis_keys

TOKEN = os.environ.get(TOKEN_ENV, "manual")
NAME = f"bench-huey-{TOKEN}"
WORKERS = 2

huey = RedisHuey(NAME, url=REDIS_URL, results=False)


@huey.task()
def noop() -> None:
    pass


@huey.task()
def mark(path: str) -> None:
    Path(path).write_text(repr(time.time()))


class Client:
    def send_marker(self, path: str) -> None:
        mark(path)

    def enqueue(self, count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            noop()
        return time.perf_counter() - started

    def depth(self) -> int | None:
        return int(huey.pending_count())

    def worker_commands(self) -> list[list[str]]:
        consumer = str(Path(sys.executable).with_name("huey_consumer"))
        arguments = f"bench.peers.huey_peer.huey -k process -w {WORKERS} -q -C -n"
        return [[consumer, *arguments.split()]]

    def cleanup(self) -> None:
        delete_redis_keys(TOKEN)
