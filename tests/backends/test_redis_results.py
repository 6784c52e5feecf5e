"""The Redis result store against a real server: every contract method, atomic steps raced
from several store instances, expiry waited out, scripts forgotten by the server.

Each test keeps its keys under a prefix of its own and deletes them afterwards, so a shared
server needs no flushing. Set CONVEYOR_TEST_REDIS_URL to use another server.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from conveyor.brokers import open_results
from conveyor.brokers.redis import RedisResultStore
from conveyor.brokers.results import JobStart
from conveyor.brokers.types import (
    Delivery,
    JobRecord,
    JobStatus,
    JobSubmission,
    QueueSample,
    Settlement,
    WorkerInfo,
)
from conveyor.errors import BrokerUnavailable, ConfigError, JobNotFound
from conveyor.message import Message
from tests.backend_urls import unavailable

REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

pytestmark = pytest.mark.timeout(60)

Opener = Callable[[], Awaitable[RedisResultStore]]


@pytest.fixture
def url() -> str:
    return f"{REDIS_URL}?prefix=conveyor-test-{secrets.token_hex(4)}:"


@pytest.fixture
async def open_store(url: str) -> AsyncIterator[Opener]:
    """Opens connected stores on this test's prefix; closes them and deletes its keys."""
    opened: list[RedisResultStore] = []

    async def opener() -> RedisResultStore:
        store = RedisResultStore(url)
        try:
            await store.connect()
        except BrokerUnavailable as error:
            unavailable(f"Redis is unreachable: {error}")
        opened.append(store)
        return store

    try:
        yield opener
    finally:
        if opened:
            client = opened[0]._redis()
            keys = [key async for key in client.scan_iter(f"{opened[0].keys.prefix}*")]
            if keys:
                await client.delete(*keys)
        for store in opened:
            await store.close()


@pytest.fixture
async def store(open_store: Opener) -> RedisResultStore:
    return await open_store()


def submission(
    task: str = "t", *, queue: str = "q", message: Message | None = None, **options: Any
) -> JobSubmission:
    message = message or Message(b"{}", routing_key=queue)
    return JobSubmission(message, queue=queue, task=task, **options)


def settlement(
    record: JobRecord,
    status: JobStatus,
    *,
    attempt: int = 1,
    started_at: float | None = None,
    **fields: Any,
) -> Settlement:
    message = Message(b"{}", routing_key=record.queue, id=record.id)
    delivery = Delivery(message, record.queue, attempt, "receipt", time.time() + 30, attempt)
    return Settlement(delivery, status, time.time() if started_at is None else started_at, **fields)


async def create(store: RedisResultStore, **options: Any) -> JobRecord:
    (record,) = await store.create_jobs([submission(**options)])
    return record


async def ttl_ms(store: RedisResultStore, job_id: str) -> int:
    return int(await store._redis().pttl(store.keys.job(job_id)))


async def until(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Wait for ``check`` to hold, without asserting how soon it does."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.05)


# connecting


async def test_connect_is_idempotent_and_ping_answers(store: RedisResultStore) -> None:
    client = store._redis()
    await store.connect()
    assert store._redis() is client
    await store.ping()


async def test_the_registry_opens_a_redis_store_for_each_scheme() -> None:
    for url in ("redis://h:6379/0", "rediss://h:6380/1", "unix:///tmp/redis.sock?db=2"):
        store = open_results(url)
        assert isinstance(store, RedisResultStore)
        assert store.scheme == "redis"


async def test_an_unreachable_server_is_unavailable_with_the_password_masked() -> None:
    store = RedisResultStore("redis://:s3cret-pw@127.0.0.1:1/0?connect_timeout=2")
    with pytest.raises(BrokerUnavailable) as caught:
        await store.connect()
    assert "redis://:***@127.0.0.1:1/0" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)
    assert "s3cret-pw" not in repr(store)
    assert caught.value.__cause__ is None
    with pytest.raises(BrokerUnavailable, match="not connected"):
        await store.get_job("x")


async def test_a_user_name_stays_shown_and_its_password_masked() -> None:
    store = RedisResultStore("rediss://app:hunter2@cache.example:6380/3")
    assert repr(store) == "RedisResultStore('rediss://app:***@cache.example:6380/3')"
    sock = RedisResultStore("unix://:hunter2@/run/redis.sock?db=1")
    assert repr(sock) == "RedisResultStore('unix://:***@/run/redis.sock')"


async def test_a_store_used_as_a_context_manager_closes_twice_harmlessly(url: str) -> None:
    try:
        async with RedisResultStore(url) as store:
            await store.ping()
    except BrokerUnavailable as error:
        unavailable(f"Redis is unreachable: {error}")
    await store.close()
    with pytest.raises(BrokerUnavailable, match="not connected"):
        await store.ping()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://h/0?prefx=a:", "unknown broker URL option.*valid: connect_timeout, db, prefix"),
        ("redis://h/0?timeout=0", "timeout must be > 0"),
        ("redis://h/0?connect_timeout=soon", "not a valid float"),
        ("redis://h:port/0", "bad Redis URL"),
        ("sqlite:///x.db", "starts with redis://"),
        ("redis:/:pw@h", "looks like redis://"),
    ],
)
def test_bad_urls_are_refused(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        RedisResultStore(url)


# job records


async def test_created_jobs_are_queued_or_scheduled_and_read_back(store: RedisResultStore) -> None:
    queued, scheduled = await store.create_jobs(
        [submission("send"), submission("send", delay=30, queue="mail")]
    )
    assert queued.status is JobStatus.QUEUED
    assert queued.attempts == 0
    assert queued.scheduled_for is None
    assert scheduled.status is JobStatus.SCHEDULED
    assert scheduled.queue == "mail"
    assert scheduled.scheduled_for == pytest.approx(time.time() + 30, abs=2)
    assert await store.get_job(queued.id) == queued
    assert await store.get_job(scheduled.id) == scheduled
    assert await ttl_ms(store, queued.id) == -1


async def test_an_unknown_job_is_not_found(store: RedisResultStore) -> None:
    with pytest.raises(JobNotFound):
        await store.get_job("never")


async def test_an_idempotency_key_within_its_window_returns_the_existing_job(
    store: RedisResultStore,
) -> None:
    first, second = await store.create_jobs(
        [submission(idempotency_key="k"), submission(idempotency_key="k")]
    )
    third = await create(store, idempotency_key="k")
    other = await create(store, idempotency_key="other")
    assert first.id == second.id == third.id != other.id
    assert third == first
    assert third.idempotency_key == "k"


async def test_an_idempotency_key_past_its_window_makes_a_new_job(
    store: RedisResultStore,
) -> None:
    first = await create(store, idempotency_key="k", idempotency_window=0.05)
    await asyncio.sleep(0.1)
    second = await create(store, idempotency_key="k", idempotency_window=0.05)
    assert first.id != second.id
    assert (await store.get_job(first.id)).idempotency_key == "k"
    await asyncio.sleep(0.1)
    third = await create(store, idempotency_key="k", idempotency_window=0.05)
    assert third.id not in (first.id, second.id)


async def test_a_shorter_window_skips_an_older_job_with_the_key(store: RedisResultStore) -> None:
    first = await create(store, idempotency_key="k", idempotency_window=600)
    await asyncio.sleep(0.1)
    assert (await create(store, idempotency_key="k", idempotency_window=600)).id == first.id
    second = await create(store, idempotency_key="k", idempotency_window=0.05)
    assert second.id != first.id
    assert (await store.get_job(first.id)).idempotency_key == "k"


async def test_one_of_many_racing_stores_creates_the_job(open_store: Opener) -> None:
    stores = [await open_store() for _ in range(20)]
    submissions = [submission(idempotency_key="tick:12:00") for _ in stores]
    replies = await asyncio.gather(
        *(s.create_jobs([sub]) for s, sub in zip(stores, submissions, strict=True))
    )
    records = [record for (record,) in replies]
    created = [r for r, sub in zip(records, submissions, strict=True) if r.id == sub.message.id]
    assert len(created) == 1
    assert {record.id for record in records} == {created[0].id}


async def test_discarding_forgets_the_record_and_frees_its_key(store: RedisResultStore) -> None:
    first = await create(store, idempotency_key="k")
    kept = await create(store)
    await store.discard_jobs([first.id])
    with pytest.raises(JobNotFound):
        await store.get_job(first.id)
    again = await create(store, idempotency_key="k")
    assert again.id != first.id
    assert await store.get_job(kept.id) == kept
    assert await store._redis().zscore(store.keys.jobs, first.id) is None


async def test_starts_mark_jobs_running_and_keep_the_first_attempt_time(
    store: RedisResultStore,
) -> None:
    record = await create(store)
    await store.record_starts([JobStart(record.id, 1, 1000.0, "w1")])
    await store.record_starts([JobStart(record.id, 2, 2000.0, "w2"), JobStart("gone", 1, 1, "w")])
    job = await store.get_job(record.id)
    assert job.status is JobStatus.RUNNING
    assert job.attempts == 2
    assert job.first_attempt_at == 1000.0
    assert job.last_attempt_at == 2000.0
    with pytest.raises(JobNotFound):
        await store.get_job("gone")


async def test_a_success_stores_result_and_attempts_and_expires_later(
    store: RedisResultStore,
) -> None:
    record = await create(store, result_ttl=600)
    await store.record_starts([JobStart(record.id, 1, 1000.0, "w")])
    started = time.time()
    await store.record_outcomes(
        [settlement(record, JobStatus.SUCCEEDED, attempt=3, started_at=started, result=[1, "a"])]
    )
    job = await store.get_job(record.id)
    assert job.status is JobStatus.SUCCEEDED
    assert job.result == [1, "a"]
    assert job.error is None
    assert job.attempts == 3
    assert job.first_attempt_at == 1000.0
    assert job.last_attempt_at == pytest.approx(started, abs=1e-5)
    assert job.last_attempt_at is not None
    assert job.updated_at >= job.last_attempt_at
    assert 0 < await ttl_ms(store, record.id) <= 600_000


async def test_a_retry_stores_its_error_and_keeps_the_record(store: RedisResultStore) -> None:
    record = await create(store)
    error = {"type": "TimeoutError", "message": "smtp", "traceback": "..."}
    started = time.time()
    await store.record_outcomes(
        [settlement(record, JobStatus.RETRYING, started_at=started, error=error)]
    )
    job = await store.get_job(record.id)
    assert job.status is JobStatus.RETRYING
    assert job.error == error
    assert job.first_attempt_at == pytest.approx(started, abs=1e-5)
    assert await ttl_ms(store, record.id) == -1
    await store.record_outcomes([settlement(record, JobStatus.DEAD, attempt=2)])
    dead = await store.get_job(record.id)
    assert dead.status is JobStatus.DEAD
    assert dead.error is None
    assert dead.first_attempt_at == job.first_attempt_at
    assert await ttl_ms(store, record.id) > 0


async def test_an_outcome_for_a_job_without_a_record_writes_nothing(
    store: RedisResultStore,
) -> None:
    ghost = JobRecord("ghost", "t", "q", JobStatus.QUEUED, 0, 0.0, 0.0)
    await store.record_outcomes([settlement(ghost, JobStatus.SUCCEEDED, result=1)])
    with pytest.raises(JobNotFound):
        await store.get_job("ghost")


async def test_batches_of_hundreds_take_a_few_round_trips(
    store: RedisResultStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = await store.create_jobs([submission() for _ in range(300)])
    client = store._redis()
    round_trips: list[str] = []
    pipeline = client.pipeline
    execute_command: Any = client.execute_command

    def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
        round_trips.append("pipeline")
        return pipeline(*args, **kwargs)

    async def counted_command(*args: Any, **options: Any) -> Any:
        round_trips.append(str(args[0]))
        return await execute_command(*args, **options)

    monkeypatch.setattr(client, "pipeline", counted_pipeline)
    monkeypatch.setattr(client, "execute_command", counted_command)
    now = time.time()
    await store.record_starts([JobStart(r.id, 1, now, "w") for r in records])
    await store.record_outcomes(
        [settlement(r, JobStatus.SUCCEEDED, result=i) for i, r in enumerate(records)]
    )
    assert len(round_trips) <= 4, round_trips
    monkeypatch.undo()
    jobs = [await store.get_job(r.id) for r in records]
    assert [job.result for job in jobs] == list(range(300))
    assert {job.status for job in jobs} == {JobStatus.SUCCEEDED}


async def test_a_sampling_cycle_is_one_round_trip_and_an_unsampled_series_expires(
    store: RedisResultStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cycle(at: float) -> list[QueueSample]:
        return [QueueSample(f"q{n}", at, n, n, n, 0) for n in range(300)]

    await store.record_samples(cycle(1000.0), retention=60)  # loads the script
    client = store._redis()
    round_trips: list[str] = []
    pipeline = client.pipeline
    execute_command: Any = client.execute_command

    def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
        round_trips.append("pipeline")
        return pipeline(*args, **kwargs)

    async def counted_command(*args: Any, **options: Any) -> Any:
        round_trips.append(str(args[0]))
        return await execute_command(*args, **options)

    monkeypatch.setattr(client, "pipeline", counted_pipeline)
    monkeypatch.setattr(client, "execute_command", counted_command)
    await store.record_samples(cycle(1005.0), retention=60)
    assert round_trips == ["pipeline"]
    monkeypatch.undo()
    kept = await store.samples(since=0)
    assert len(kept) == 300
    assert [s.at for s in kept["q299"]] == [1000.0, 1005.0]
    assert 0 < await client.ttl(store.keys.samples("q0")) <= 61


async def test_requeued_jobs_are_queued_and_kept(store: RedisResultStore) -> None:
    record = await create(store)
    await store.record_outcomes([settlement(record, JobStatus.DEAD)])
    assert await ttl_ms(store, record.id) > 0
    await store.requeued([record.id, "unknown"])
    job = await store.get_job(record.id)
    assert job.status is JobStatus.QUEUED
    assert await ttl_ms(store, record.id) == -1
    assert await store._redis().zscore(store.keys.expiring, record.id) is None
    with pytest.raises(JobNotFound):
        await store.get_job("unknown")


async def test_progress_is_stored_as_json(store: RedisResultStore) -> None:
    record = await create(store)
    await store.set_progress(record.id, {"done": 3, "of": 10})
    job = await store.get_job(record.id)
    assert job.progress == {"done": 3, "of": 10}
    assert job.updated_at >= record.updated_at
    with pytest.raises(JobNotFound):
        await store.set_progress("unknown", 1)


async def test_only_jobs_that_have_not_started_can_be_cancelled(store: RedisResultStore) -> None:
    queued, scheduled, running, done = await store.create_jobs(
        [submission(), submission(delay=60), submission(), submission()]
    )
    await store.record_starts([JobStart(running.id, 1, time.time(), "w")])
    await store.record_outcomes([settlement(done, JobStatus.SUCCEEDED)])
    assert await store.cancel_job(queued.id) is True
    assert await store.cancel_job(scheduled.id) is True
    assert await store.cancel_job(running.id) is False
    assert await store.cancel_job(done.id) is False
    assert await store.cancel_job(queued.id) is False
    assert (await store.get_job(queued.id)).status is JobStatus.CANCELLED
    assert await ttl_ms(store, queued.id) > 0
    ids = [queued.id, scheduled.id, running.id, done.id, "unknown"]
    assert await store.cancelled(ids) == {queued.id, scheduled.id}
    many = [*(f"gone-{n}" for n in range(250)), *ids]
    assert await store.cancelled(many) == {queued.id, scheduled.id}
    assert await store.cancelled([]) == set()
    with pytest.raises(JobNotFound):
        await store.cancel_job("unknown")


async def test_a_retrying_job_can_be_cancelled_once_by_racing_stores(open_store: Opener) -> None:
    stores = [await open_store() for _ in range(10)]
    record = await create(stores[0])
    await stores[0].record_outcomes([settlement(record, JobStatus.RETRYING)])
    outcomes = await asyncio.gather(*(s.cancel_job(record.id) for s in stores))
    assert sorted(outcomes) == [False] * 9 + [True]


async def test_succeeded_keys_name_only_kept_successes(store: RedisResultStore) -> None:
    ok, failed, _pending, requeued = await store.create_jobs(
        [submission(idempotency_key=key) for key in ("ok", "failed", "pending", "requeued")]
    )
    await store.record_outcomes(
        [
            settlement(ok, JobStatus.SUCCEEDED),
            settlement(failed, JobStatus.FAILED),
            settlement(requeued, JobStatus.SUCCEEDED),
        ]
    )
    await store.requeued([requeued.id])
    keys = ["ok", "failed", "pending", "requeued", "unknown", "ok"]
    assert await store.succeeded_keys(keys) == {"ok"}
    assert await store.succeeded_keys([]) == set()


async def test_a_success_outlives_its_idempotency_window(store: RedisResultStore) -> None:
    record = await create(store, idempotency_key="k", idempotency_window=0.05)
    await store.record_outcomes([settlement(record, JobStatus.SUCCEEDED)])
    await asyncio.sleep(0.1)
    assert await store.succeeded_keys(["k"]) == {"k"}


async def test_job_stats_count_by_status_with_a_duration_histogram(
    store: RedisResultStore,
) -> None:
    now = time.time()
    fast, slow, failed, waiting, running = await store.create_jobs(
        [submission("mail") for _ in range(3)] + [submission("audit") for _ in range(2)]
    )
    await store.record_starts([JobStart(running.id, 1, now, "w")])
    await store.record_outcomes(
        [
            settlement(fast, JobStatus.SUCCEEDED, started_at=now),
            settlement(slow, JobStatus.SUCCEEDED, started_at=now - 3),
            settlement(failed, JobStatus.FAILED, started_at=now - 100),
        ]
    )
    audit, mail = await store.job_stats(buckets=[1.0, 5.0])
    assert audit.task == "audit"
    assert dict(audit.statuses) == {JobStatus.QUEUED: 1, JobStatus.RUNNING: 1}
    assert audit.duration_count == 0
    assert audit.duration_buckets == ((1.0, 0), (5.0, 0))
    assert mail.task == "mail"
    assert dict(mail.statuses) == {JobStatus.SUCCEEDED: 2, JobStatus.FAILED: 1}
    assert mail.duration_buckets == ((1.0, 1), (5.0, 2))
    assert mail.duration_count == 3
    assert mail.duration_sum == pytest.approx(103, abs=1)
    mark = time.time()
    await asyncio.sleep(0.01)
    await store.set_progress(waiting.id, 0.5)
    (recent,) = await store.job_stats(since=mark)
    assert recent.task == "audit"
    assert dict(recent.statuses) == {JobStatus.QUEUED: 1}
    assert await store.job_stats(since=time.time() + 1) == []
    with pytest.raises(ConfigError, match="buckets"):
        await store.job_stats(buckets=[5.0, 1.0])


async def test_finished_records_expire_and_leave_no_index_entries(
    store: RedisResultStore,
) -> None:
    short = [await create(store, result_ttl=0.3) for _ in range(3)]
    kept = await create(store, result_ttl=600)
    await store.record_outcomes(
        [settlement(r, JobStatus.SUCCEEDED) for r in short]
        + [settlement(kept, JobStatus.SUCCEEDED)]
    )

    async def expired() -> bool:
        try:
            await store.get_job(short[-1].id)
        except JobNotFound:
            return True
        return False

    await until(expired)
    for record in short:
        with pytest.raises(JobNotFound):
            await store.get_job(record.id)
    assert await store.get_job(kept.id)
    client = store._redis()

    async def swept() -> bool:
        other = await create(store)
        await store.record_outcomes([settlement(other, JobStatus.RETRYING)])
        return bool(await client.zcard(store.keys.expiring) == 1)

    await until(swept)
    (stats,) = await store.job_stats()
    assert dict(stats.statuses) == {JobStatus.SUCCEEDED: 1, JobStatus.RETRYING: 1}
    indexed = set(await client.zrange(store.keys.jobs, 0, -1))
    assert not indexed & {record.id for record in short}


async def test_job_stats_drop_index_entries_of_vanished_records(store: RedisResultStore) -> None:
    record = await create(store)
    await store._redis().delete(store.keys.job(record.id))
    assert await store.job_stats() == []
    assert await store._redis().zcard(store.keys.jobs) == 0


# waiting


async def test_waiting_wakes_once_another_store_records_the_outcome(open_store: Opener) -> None:
    waiter, worker = await open_store(), await open_store()
    record = await create(waiter)
    waiting = asyncio.create_task(waiter.wait_for_job(record.id, 30))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await worker.record_outcomes([settlement(record, JobStatus.SUCCEEDED, result="sent")])
    job = await asyncio.wait_for(waiting, 10)
    assert job.status is JobStatus.SUCCEEDED
    assert job.result == "sent"


async def test_many_waiters_on_one_job_all_wake(open_store: Opener) -> None:
    waiter, worker = await open_store(), await open_store()
    first, second = await waiter.create_jobs([submission(), submission()])
    waiting = [asyncio.create_task(waiter.wait_for_job(r.id, 30)) for r in (first, first, second)]
    await asyncio.sleep(0.2)
    await worker.record_outcomes([settlement(first, JobStatus.FAILED)])
    done = await asyncio.wait_for(asyncio.gather(*waiting[:2]), 10)
    assert {job.status for job in done} == {JobStatus.FAILED}
    assert not waiting[2].done()
    assert await worker.cancel_job(second.id)
    assert (await asyncio.wait_for(waiting[2], 10)).status is JobStatus.CANCELLED


async def test_waiting_returns_the_unfinished_record_at_the_timeout(
    store: RedisResultStore,
) -> None:
    record = await create(store)
    job = await store.wait_for_job(record.id, 0.2)
    assert job.status is JobStatus.QUEUED
    assert await store.wait_for_job(record.id, 0) == job


async def test_waiting_for_a_finished_or_unknown_job(store: RedisResultStore) -> None:
    record = await create(store)
    await store.record_outcomes([settlement(record, JobStatus.SUCCEEDED)])
    assert (await store.wait_for_job(record.id, 30)).status is JobStatus.SUCCEEDED
    with pytest.raises(JobNotFound):
        await store.wait_for_job("unknown", 1)


async def test_a_new_watch_follows_after_one_ended(open_store: Opener) -> None:
    waiter, worker = await open_store(), await open_store()
    first, second = await waiter.create_jobs([submission(), submission()])
    assert (await waiter.wait_for_job(first.id, 0.1)).status is JobStatus.QUEUED
    waiting = asyncio.create_task(waiter.wait_for_job(first.id, 30))
    await asyncio.sleep(0.2)
    await worker.record_outcomes([settlement(first, JobStatus.SUCCEEDED)])
    assert (await asyncio.wait_for(waiting, 10)).status is JobStatus.SUCCEEDED
    assert (await waiter.wait_for_job(second.id, 0.1)).status is JobStatus.QUEUED


async def test_a_dropped_pubsub_connection_misses_no_outcome(open_store: Opener) -> None:
    waiter, worker = await open_store(), await open_store()
    record = await create(waiter)
    waiting = asyncio.create_task(waiter.wait_for_job(record.id, 30))
    await asyncio.sleep(0.2)
    session = waiter._watcher._session  # type: ignore[union-attr]
    assert session is not None
    assert session.pubsub.connection is not None
    await session.pubsub.connection.disconnect()
    await worker.record_outcomes([settlement(record, JobStatus.SUCCEEDED)])
    assert (await asyncio.wait_for(waiting, 10)).status is JobStatus.SUCCEEDED
    second = await create(waiter)
    waiting = asyncio.create_task(waiter.wait_for_job(second.id, 30))
    await asyncio.sleep(0.2)
    await worker.record_outcomes([settlement(second, JobStatus.SUCCEEDED)])
    assert (await asyncio.wait_for(waiting, 10)).status is JobStatus.SUCCEEDED


# scripts and coordination


async def test_scripts_survive_a_server_that_forgot_them(store: RedisResultStore) -> None:
    record = await create(store, idempotency_key="k")
    await store._redis().script_flush()
    assert (await create(store, idempotency_key="k")).id == record.id
    await store._redis().script_flush()
    await store.record_outcomes([settlement(record, JobStatus.SUCCEEDED)])
    await store._redis().script_flush()
    assert await store.acquire_rate("flush", per_second=1, burst=1) == 0.0
    assert (await store.get_job(record.id)).status is JobStatus.SUCCEEDED


async def test_rate_limit_tokens_are_shared_between_stores(open_store: Opener) -> None:
    first, second = await open_store(), await open_store()
    taken = [
        await store.acquire_rate("task:mail", per_second=0.01, burst=3)
        for store in (first, second, first)
    ]
    assert taken == [0.0, 0.0, 0.0]
    waits = [await s.acquire_rate("task:mail", per_second=0.01, burst=3) for s in (second, first)]
    assert all(50 < wait <= 100 for wait in waits), waits
    assert await first.acquire_rate("task:other", per_second=0.01, burst=3) == 0.0


async def test_a_rate_limit_refills_over_time(store: RedisResultStore) -> None:
    assert await store.acquire_rate("fast", per_second=20, burst=1) == 0.0
    wait = await store.acquire_rate("fast", per_second=20, burst=1)
    assert 0 < wait <= 0.05
    await asyncio.sleep(wait + 0.05)
    assert await store.acquire_rate("fast", per_second=20, burst=1) == 0.0
    assert 0 < await store._redis().pttl(store.keys.rate("fast")) <= 1050


async def test_a_rate_limit_needs_a_positive_rate_and_burst(store: RedisResultStore) -> None:
    with pytest.raises(ConfigError):
        await store.acquire_rate("k", per_second=0, burst=1)
    with pytest.raises(ConfigError):
        await store.acquire_rate("k", per_second=1, burst=0)


def worker_info(worker_id: str, heartbeat_at: float = 0.0, **fields: Any) -> WorkerInfo:
    return WorkerInfo(worker_id, "host", 42, ("mail", "audit"), 100.0, heartbeat_at, **fields)


async def test_heartbeats_list_workers_by_id_until_forgotten(open_store: Opener) -> None:
    first, second = await open_store(), await open_store()
    before = time.time()
    await first.heartbeat(worker_info("w2", running=3))
    await second.heartbeat(worker_info("w1", processed=7, concurrency=4))
    await first.heartbeat(worker_info("w2", running=1))
    w1, w2 = await second.list_workers()
    assert w1 == worker_info("w1", processed=7, concurrency=4, heartbeat_at=w1.heartbeat_at)
    assert w2 == worker_info("w2", running=1, heartbeat_at=w2.heartbeat_at)
    assert w1.heartbeat_at >= before
    assert w2.queues == ("mail", "audit")
    await second.forget_worker("w2")
    assert [w.id for w in await first.list_workers()] == ["w1"]
