"""A ResultStore on Redis, shared by every process and host that reaches the server.

Job records are hashes that Redis expires itself once a job has finished; every step that
reads a record to decide what to write (put-if-absent by idempotency key, cancelling, rate
limits, a queue sample's slot) is one Lua script, so racing processes cannot interleave
inside it. Batches are pipelined. Key layout: ``conveyor.brokers.redis.keys``.

Scripts name keys they derive from what they read (the job an idempotency key points
to), which Redis Cluster refuses: use a single server, or a primary with replicas.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import redis.asyncio

from conveyor.brokers.redis import scripts
from conveyor.brokers.redis.connection import Endpoint, answer
from conveyor.brokers.redis.keys import Keys
from conveyor.brokers.redis.records import dumps, pairs, record, stamp
from conveyor.brokers.redis.scripts import Call
from conveyor.brokers.redis.stats import duration, task_stats
from conveyor.brokers.redis.watch import Watcher
from conveyor.brokers.results import (
    SAMPLE_INTERVAL,
    SAMPLE_RETENTION,
    JobStart,
    ResultStore,
    Sampling,
)
from conveyor.brokers.types import (
    DURATION_BUCKETS,
    JobPage,
    JobQuery,
    JobRecord,
    JobStatus,
    JobSubmission,
    QueueSample,
    Settlement,
    TaskStats,
    WorkerInfo,
    check_buckets,
)
from conveyor.errors import BrokerUnavailable, ConfigError, JobNotFound

_STATS_CHUNK = 1000
_SWEEP_LIMIT = 100
_SCRIPT_BATCH = 200
"""Jobs per script run: a script holds the server, so a long batch runs as several."""
_POLL_BACKOFF = (0.05, 1.0)


class RedisConnections(Protocol):
    """A Redis broker whose connection a result store shares (``Broker.results()``)."""

    async def connect(self) -> None: ...

    def connected(self) -> Any: ...


class RedisResultStore(ResultStore):
    """Job records, idempotency keys, rate limits and heartbeats in one Redis database.

    ``redis://[:password@]host[:port][/db]``, ``rediss://`` (TLS) or ``unix:///path.sock``,
    with the options of ``RedisOptions`` in the query string.
    """

    scheme = "redis"

    def __init__(self, url: str, *, broker: RedisConnections | None = None) -> None:
        super().__init__(url)
        self._endpoint = Endpoint.parse(url)
        self.keys = Keys(self._endpoint.options.prefix)
        self._client: redis.asyncio.Redis | None = None
        self._watcher: Watcher | None = None
        self._connecting = asyncio.Lock()
        self._broker = broker

    def __repr__(self) -> str:
        return f"RedisResultStore({self._endpoint.shown!r})"

    async def connect(self) -> None:
        if self._broker is not None:
            await self._broker.connect()
            return
        async with self._connecting:
            if self._client is not None:
                return
            client = self._endpoint.client()
            try:
                await self._ping(client)
            except BaseException:
                await client.aclose()
                raise
            self._client = client
            self._watcher = Watcher(client, self._endpoint.options.timeout)

    async def close(self) -> None:
        """Close this store's own connections (a broker's store leaves the broker's open)."""
        client, watcher = self._client, self._watcher
        self._client = self._watcher = None
        if watcher is not None:
            await watcher.close()
        if client is not None:
            await client.aclose()

    async def ping(self) -> None:
        await self._ping(self._redis())

    async def _ping(self, client: redis.asyncio.Redis) -> None:
        with self._endpoint.errors():
            async with asyncio.timeout(self._endpoint.options.connect_timeout):
                await answer(client.ping())

    def _redis(self) -> redis.asyncio.Redis:
        if self._broker is not None:
            client: redis.asyncio.Redis = self._broker.connected().text
            return client
        if self._client is None:
            raise BrokerUnavailable(
                f"the result store at {self._endpoint.shown} is not connected; call connect() "
                "first or use it as an async context manager"
            )
        return self._client

    async def _run(self, calls: Sequence[Call]) -> list[Any]:
        with self._endpoint.errors():
            return await scripts.run_many(self._redis(), calls)

    # job records

    async def create_jobs(self, submissions: Sequence[JobSubmission]) -> list[JobRecord]:
        now = time.time()
        replies = await self._run([self._create(submission, now) for submission in submissions])
        records = []
        for submission, reply in zip(submissions, replies, strict=True):
            if reply is None:
                records.append(_created(submission, now))
            else:
                existing_id, fields = reply
                records.append(record(existing_id, pairs(fields)))
        return records

    def _create(self, submission: JobSubmission, now: float) -> Call:
        job_id = submission.message.id
        key = submission.idempotency_key
        keys = [self.keys.job(job_id), self.keys.jobs]
        if key is not None:
            keys.append(self.keys.idempotency(key))
        delayed = submission.delay > 0
        return Call(
            scripts.CREATE,
            keys,
            [
                job_id,
                submission.task,
                submission.queue,
                (JobStatus.SCHEDULED if delayed else JobStatus.QUEUED).value,
                stamp(now),
                stamp(now + submission.delay) if delayed else "",
                key or "",
                str(int(submission.idempotency_window * 1000)),
                repr(float(submission.result_ttl)),
                self.keys.job_prefix,
                submission.request_digest or "",
            ],
        )

    async def discard_jobs(self, job_ids: Sequence[str]) -> None:
        common = [self.keys.jobs, self.keys.expiring]
        await self._run(
            [
                Call(scripts.DISCARD, [self.keys.job(job_id), *common], [job_id, self.keys.prefix])
                for job_id in job_ids
            ]
        )

    async def get_job(self, job_id: str) -> JobRecord:
        with self._endpoint.errors():
            fields = await answer(self._redis().hgetall(self.keys.job(job_id)))
        if not fields:
            raise JobNotFound(job_id)
        return record(job_id, fields)

    async def wait_for_job(self, job_id: str, timeout: float) -> JobRecord:
        """Sleeps on the job's channel and reads the record whenever woken; polls, backing
        off, only while Pub/Sub fails (the record is what counts, not the message)."""
        deadline = time.monotonic() + timeout
        record = await self.get_job(job_id)
        pause = _POLL_BACKOFF[0]
        while not record.status.finished and deadline > time.monotonic():
            record = await self._watch(job_id, deadline)
            if record.status.finished or deadline <= time.monotonic():
                break
            await asyncio.sleep(min(pause, deadline - time.monotonic()))
            pause = min(pause * 2, _POLL_BACKOFF[1])
            record = await self.get_job(job_id)
        return record

    async def _watch(self, job_id: str, deadline: float) -> JobRecord:
        """The record once finished, by the deadline, or when the watch fails."""
        watcher = self._watcher if self._broker is None else self._broker.connected().watcher
        if watcher is None:
            self._redis()
            raise AssertionError("connected without a watcher")
        with self._endpoint.errors():
            patience = deadline - time.monotonic()
            async with watcher.watching(self.keys.done(job_id), patience) as watch:
                record = await self.get_job(job_id)
                while not record.status.finished and watch.alive:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    await watch.wait(left)
                    record = await self.get_job(job_id)
        return record

    async def record_starts(self, starts: Sequence[JobStart]) -> None:
        await self._run(self._starts(starts, time.time()))

    def _starts(self, starts: Sequence[JobStart], now: float) -> list[Call]:
        return [
            Call(
                scripts.START,
                [self.keys.jobs],
                [
                    stamp(now),
                    self.keys.job_prefix,
                    _packed(
                        [start.job_id, str(start.attempt), stamp(start.started_at)]
                        for start in batch
                    ),
                ],
            )
            for batch in scripts.batches(starts, _SCRIPT_BATCH)
        ]

    async def record_outcomes(
        self, settlements: Sequence[Settlement], *, starts: Sequence[JobStart] = ()
    ) -> None:
        if not settlements:
            await self.record_starts(starts)
            return
        now = time.time()
        calls = self._starts(starts, now)
        calls.extend(
            self._outcomes(batch, now) for batch in scripts.batches(settlements, _SCRIPT_BATCH)
        )
        calls.append(self._sweep(now, _SWEEP_LIMIT + len(settlements)))
        await self._run(calls)

    def _outcomes(self, settlements: Sequence[Settlement], now: float) -> Call:
        outcomes = []
        for settlement in settlements:
            status, result, error = settlement.status, settlement.result, settlement.error
            retrying = status is JobStatus.RETRYING
            outcomes.append(
                [
                    settlement.delivery.message.id,
                    status.value,
                    str(settlement.delivery.delivery_count),
                    "" if result is None else dumps(result),
                    "" if error is None else dumps(error),
                    stamp(settlement.started_at),
                    "1" if status.finished else "0",
                    stamp(now + settlement.retry_delay) if retrying else "",
                ]
            )
        return Call(
            scripts.OUTCOME,
            [self.keys.jobs, self.keys.expiring],
            [stamp(now), self.keys.prefix, _packed(outcomes)],
        )

    def _sweep(self, now: float, limit: int, gone: Sequence[str] = ()) -> Call:
        return Call(
            scripts.SWEEP,
            [self.keys.jobs, self.keys.expiring],
            [stamp(now), str(limit), self.keys.job_prefix, *gone],
        )

    async def requeued(self, job_ids: Sequence[str]) -> None:
        now = stamp(time.time())
        common = [self.keys.jobs, self.keys.expiring]
        await self._run(
            [
                Call(scripts.REQUEUE, [self.keys.job(job_id), *common], [job_id, now])
                for job_id in job_ids
            ]
        )

    async def set_progress(self, job_id: str, progress: object) -> None:
        (stored,) = await self._run(
            [
                Call(
                    scripts.PROGRESS,
                    [self.keys.job(job_id), self.keys.jobs],
                    [job_id, dumps(progress), stamp(time.time())],
                )
            ]
        )
        if not stored:
            raise JobNotFound(job_id)

    async def cancel_job(self, job_id: str) -> bool:
        (outcome,) = await self._run(
            [
                Call(
                    scripts.CANCEL,
                    [self.keys.job(job_id), self.keys.jobs, self.keys.expiring],
                    [job_id, stamp(time.time()), self.keys.done(job_id)],
                )
            ]
        )
        if outcome < 0:
            raise JobNotFound(job_id)
        return bool(outcome)

    async def cancelled(self, job_ids: Sequence[str]) -> set[str]:
        calls = [
            Call(scripts.STATUSES, [], [self.keys.job_prefix, _packed(batch)])
            for batch in scripts.batches(job_ids, _SCRIPT_BATCH)
        ]
        statuses = itertools.chain.from_iterable(await self._run(calls))
        return {
            job_id
            for job_id, status in zip(job_ids, statuses, strict=True)
            if status == JobStatus.CANCELLED.value
        }

    async def succeeded_keys(self, keys: Sequence[str]) -> set[str]:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return set()
        markers = [self.keys.succeeded(key) for key in unique]
        (found,) = await self._run([Call(scripts.SUCCEEDED, markers, [self.keys.job_prefix])])
        return {unique[position - 1] for position in found}

    async def job_stats(
        self, *, since: float | None = None, buckets: Sequence[float] = DURATION_BUCKETS
    ) -> list[TaskStats]:
        bounds = check_buckets(buckets)
        client = self._redis()
        rows: list[tuple[str, JobStatus, float | None]] = []
        gone: list[str] = []
        with self._endpoint.errors():
            low = "-inf" if since is None else stamp(since)
            job_ids: list[str] = await answer(client.zrangebyscore(self.keys.jobs, low, "+inf"))
            for start in range(0, len(job_ids), _STATS_CHUNK):
                chunk = job_ids[start : start + _STATS_CHUNK]
                pipeline = client.pipeline(transaction=False)
                for job_id in chunk:
                    pipeline.hmget(
                        self.keys.job(job_id), ["task", "status", "last_attempt_at", "updated_at"]
                    )
                for job_id, (task, status, last, updated) in zip(
                    chunk, await pipeline.execute(), strict=True
                ):
                    if task is None or status is None or updated is None:
                        gone.append(job_id)
                        continue
                    state = JobStatus(status)
                    rows.append((task, state, duration(state, last, updated)))
        for start in range(0, len(gone), _STATS_CHUNK):
            await self._run([self._sweep(time.time(), 0, gone[start : start + _STATS_CHUNK])])
        return task_stats(rows, bounds)

    async def list_jobs(self, query: JobQuery) -> JobPage:
        """Reads every kept record updated since ``query.since`` (the index is scored by
        update time), a few hundred per round trip, and filters them here."""
        client = self._redis()
        records: list[JobRecord] = []
        with self._endpoint.errors():
            low = "-inf" if query.since is None else stamp(query.since)
            job_ids: list[str] = await answer(client.zrangebyscore(self.keys.jobs, low, "+inf"))
            for chunk in scripts.batches(job_ids, _STATS_CHUNK):
                pipeline = client.pipeline(transaction=False)
                for job_id in chunk:
                    pipeline.hgetall(self.keys.job(job_id))
                for job_id, fields in zip(chunk, await pipeline.execute(), strict=True):
                    if fields:
                        records.append(record(job_id, fields))
        return query.page(records)

    # coordination between worker processes

    async def acquire_rate(self, key: str, *, per_second: float, burst: int) -> float:
        if not per_second > 0 or burst < 1:
            raise ConfigError(
                f"a rate limit needs per_second > 0 and burst >= 1, not {per_second} and {burst}"
            )
        (wait,) = await self._run(
            [Call(scripts.RATE, [self.keys.rate(key)], [repr(float(per_second)), str(burst)])]
        )
        return float(wait)

    async def heartbeat(self, worker: WorkerInfo) -> None:
        info = dataclasses.asdict(worker)
        info["heartbeat_at"] = time.time()
        with self._endpoint.errors():
            await answer(self._redis().hset(self.keys.workers, worker.id, json.dumps(info)))

    async def list_workers(self) -> list[WorkerInfo]:
        with self._endpoint.errors():
            stored = await answer(self._redis().hgetall(self.keys.workers))
        return [_worker(stored[worker_id]) for worker_id in sorted(stored)]

    async def forget_worker(self, worker_id: str) -> None:
        with self._endpoint.errors():
            await answer(self._redis().hdel(self.keys.workers, worker_id))

    # queue history

    async def record_samples(
        self,
        samples: Sequence[QueueSample],
        *,
        interval: float = SAMPLE_INTERVAL,
        retention: float = SAMPLE_RETENTION,
    ) -> None:
        """One script run per sampling cycle (a few hundred queues each), pipelined."""
        sampling = Sampling.of(interval, retention)
        if not samples:
            return
        newest = max(round(sample.at * 1000) for sample in samples)
        ttl = str(math.ceil(sampling.retention_ms / 1000) + 1)
        calls = []
        for batch in scripts.batches(samples, _SCRIPT_BATCH):
            rows = []
            for sample in batch:
                at_ms = round(sample.at * 1000)
                start, end = sampling.slot(at_ms)
                member = [at_ms, sample.depth, sample.published, sample.acked, sample.dead_lettered]
                cutoff = at_ms - sampling.retention_ms
                rows.append([sample.queue, str(at_ms), str(start), str(end), str(cutoff),
                             _packed(member)])  # fmt: skip
            calls.append(
                Call(
                    scripts.SAMPLES,
                    [self.keys.sampled],
                    [
                        self.keys.sample_prefix,
                        str(sampling.limit),
                        ttl,
                        str(newest - sampling.retention_ms),
                        _packed(rows),
                    ],
                )
            )
        await self._run(calls)

    async def samples(
        self, *, since: float, queues: Sequence[str] | None = None
    ) -> dict[str, list[QueueSample]]:
        since_ms = str(round(since * 1000))
        client = self._redis()
        with self._endpoint.errors():
            if queues is None:
                queues = await answer(client.zrangebyscore(self.keys.sampled, since_ms, "+inf"))
            if not queues:
                return {}
            pipeline = client.pipeline(transaction=False)
            for queue in queues:
                pipeline.zrangebyscore(self.keys.samples(queue), since_ms, "+inf")
            replies = await pipeline.execute()
        found: dict[str, list[QueueSample]] = {}
        for queue, members in zip(queues, replies, strict=True):
            if members:
                found[queue] = [_sample(queue, member) for member in members]
        return found


def _sample(queue: str, member: str) -> QueueSample:
    at_ms, depth, published, acked, dead_lettered = json.loads(member)[:5]
    return QueueSample(queue, at_ms / 1000, depth, published, acked, dead_lettered)


def _packed(rows: Iterable[object]) -> str:
    """A batch as one script argument, which the script reads with cjson: one string to
    send instead of several per job, each of which the client would encode on its own."""
    return json.dumps(list(rows), ensure_ascii=False, separators=(",", ":"))


def _created(submission: JobSubmission, now: float) -> JobRecord:
    """The record create.lua wrote, as get_job would read it back."""
    delayed = submission.delay > 0
    return JobRecord(
        id=submission.message.id,
        task=submission.task,
        queue=submission.queue,
        status=JobStatus.SCHEDULED if delayed else JobStatus.QUEUED,
        attempts=0,
        created_at=float(stamp(now)),
        updated_at=float(stamp(now)),
        scheduled_for=float(stamp(now + submission.delay)) if delayed else None,
        idempotency_key=submission.idempotency_key,
        request_digest=submission.request_digest,
    )


_WORKER_FIELDS = frozenset(field.name for field in dataclasses.fields(WorkerInfo))


def _worker(text: str) -> WorkerInfo:
    """Fields a newer version may add are left out rather than refused."""
    fields = {name: value for name, value in json.loads(text).items() if name in _WORKER_FIELDS}
    fields["queues"] = tuple(fields["queues"])
    return WorkerInfo(**fields)
