"""arq on Redis: 2 worker processes, defaults but for results (not kept) and per-job logs.

arq runs only coroutines, so its no-op is ``async def``. Workers:
``arq bench.peers.arq_peer.WorkerSettings --custom-log-dict bench.peers.arq_peer.LOGGING``
twice (arq's default logging writes two lines per job; WARNING keeps it quiet as the other
peers are).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any, ClassVar, cast

from arq import create_pool
from arq.connections import RedisSettings

from bench.peers import REDIS_DB, REDIS_HOST, REDIS_PORT, TOKEN_ENV, delete_redis_keys

TOKEN = os.environ.get(TOKEN_ENV, "manual")
QUEUE = f"bench-arq-{TOKEN}"
WORKERS = 2
REDIS = RedisSettings(host=REDIS_HOST, port=REDIS_PORT, database=REDIS_DB)

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "loggers": {"arq": {"handlers": ["stderr"], "level": "WARNING"}},
}


async def noop(ctx: dict[str, Any]) -> None:
    pass


async def mark(ctx: dict[str, Any], path: str) -> None:
    await asyncio.to_thread(Path(path).write_text, repr(time.time()))


class WorkerSettings:
    functions: ClassVar[list[Any]] = [noop, mark]
    queue_name = QUEUE
    redis_settings = REDIS
    keep_result = 0
    log_results = False


class Client:
    def __init__(self) -> None:
        self._jobs = 0

    def _job_id(self) -> str:
        self._jobs += 1
        return f"{TOKEN}-{self._jobs}"

    async def _enqueue(self, function: str, count: int, *args: Any) -> float:
        pool = await create_pool(REDIS)
        try:
            started = time.perf_counter()
            for _ in range(count):
                await pool.enqueue_job(function, *args, _job_id=self._job_id(), _queue_name=QUEUE)
            return time.perf_counter() - started
        finally:
            await pool.aclose()

    def send_marker(self, path: str) -> None:
        asyncio.run(self._enqueue("mark", 1, path))

    def enqueue(self, count: int) -> float:
        return asyncio.run(self._enqueue("noop", count))

    def depth(self) -> int | None:
        import redis

        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
        try:  # a job leaves the queue's sorted set when it has finished
            return cast("int", client.zcard(QUEUE))
        finally:
            client.close()

    def worker_commands(self) -> list[list[str]]:
        arq = str(Path(sys.executable).with_name("arq"))
        arguments = (
            "bench.peers.arq_peer.WorkerSettings --custom-log-dict bench.peers.arq_peer.LOGGING"
        )
        return [[arq, *arguments.split()] for _ in range(WORKERS)]

    def cleanup(self) -> None:
        delete_redis_keys(TOKEN)
