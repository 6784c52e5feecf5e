"""Tasks end to end: enqueue, run in the real worker, retry, dead-letter, results."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import logging
import os
import threading
import time

import pytest

from conveyor.app import App
from conveyor.brokers.types import JobStatus
from conveyor.errors import (
    ConfigError,
    IdempotencyConflict,
    JobFailed,
    JobNotFound,
    PermanentError,
    ResultTimeout,
    Retry,
    TemporaryError,
    ValidationError,
)
from conveyor.message import Message
from conveyor.tasks.context import job_context
from conveyor.tasks.states import dead_letter_queue
from conveyor.worker.consume import Worker


@dataclasses.dataclass
class Email:
    to: str
    subject: str


async def test_sync_task_runs_on_a_worker_and_its_result_is_stored(app: App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    job = await add.adelay(2, 3)
    assert job.record.status is JobStatus.QUEUED
    await Worker(app).run_until_idle()
    assert await job.aresult(timeout=5) == 5
    assert job.status is JobStatus.SUCCEEDED
    assert job.attempts == 1


async def test_async_task_runs_on_the_event_loop(app: App) -> None:
    @app.task
    async def greet(email: Email) -> str:
        await asyncio.sleep(0)
        return f"hello {email.to}"

    job = await greet.asend([Email("ada@example.com", "hi")])
    await Worker(app).run_until_idle()
    assert await job.aresult(timeout=5) == "hello ada@example.com"


async def test_typed_arguments_are_refused_at_send_and_nothing_is_written(app: App) -> None:
    @app.task
    def send_email(email: Email, retries: int = 0) -> None:
        return None

    with pytest.raises(ValidationError, match="retries"):
        await send_email.asend([Email("a@b", "s")], {"retries": "three"})
    with pytest.raises(ValidationError):
        await send_email.asend([], {"nope": 1})
    broker = await app.abroker()
    assert await broker.list_queues() == []


async def test_enqueue_by_name_with_json_arguments(app: App) -> None:
    @app.task(name="emails.send")
    def send_email(email: Email) -> str:
        return email.to

    job = await app.asend_task("emails.send", [{"to": "x@y", "subject": "s"}])
    await Worker(app).run_until_idle()
    assert await job.aresult(timeout=5) == "x@y"
    with pytest.raises(ConfigError, match=r"registered: emails\.send"):
        await app.asend_task("emails.sned", [])


async def test_explicit_retry_delays_are_followed_then_the_job_succeeds(app: App) -> None:
    calls: list[float] = []

    @app.task(backoff=[0.2, 0.4], max_retries=2)
    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise TemporaryError("smtp 451")
        return "sent"

    job = await flaky.adelay()
    await Worker(app).run_until_idle()
    assert await job.aresult(timeout=5) == "sent"
    assert job.attempts == 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    assert gaps[0] == pytest.approx(0.2, abs=0.15)
    assert gaps[1] == pytest.approx(0.4, abs=0.15)


async def test_last_failure_goes_to_the_dead_letter_queue_with_its_story(app: App) -> None:
    @app.task(backoff=[0.05], max_retries=1)
    def always_fails(order: int) -> None:
        raise ValueError(f"order {order} is broken")

    job = await always_fails.adelay(42)
    worker = Worker(app)
    await worker.run_until_idle()
    with pytest.raises(JobFailed, match="order 42 is broken"):
        await job.aresult(timeout=5)
    assert job.status is JobStatus.DEAD
    (dead,) = await app.adead_letters()
    assert dead.job_id == job.id
    assert dead.task == always_fails.name
    assert dead.arguments == {"order": 42}
    assert dead.error_type == "ValueError"
    assert dead.error_message == "order 42 is broken"
    assert dead.traceback is not None
    assert "raise ValueError" in dead.traceback
    assert dead.attempts == 2
    assert dead.first_attempt_at is not None
    assert dead.last_attempt_at is not None
    assert dead.first_attempt_at < dead.last_attempt_at
    assert dead.queue == "default"
    assert dead.worker == worker.id
    assert dead.reason == "retries_exhausted"
    assert job.error is not None
    assert job.error["reason"] == "retries_exhausted"


async def test_permanent_error_is_dead_lettered_without_retries(app: App) -> None:
    @app.task(max_retries=5)
    def invalid_address() -> None:
        raise PermanentError("no such mailbox")

    job = await invalid_address.adelay()
    await Worker(app).run_until_idle()
    await job.arefresh()
    assert job.status is JobStatus.DEAD
    assert job.attempts == 1
    (dead,) = await app.adead_letters()
    assert dead.reason == "permanent_error"


async def test_dont_retry_on_and_retry_on_choose_what_is_retried(app: App) -> None:
    @app.task(max_retries=3, backoff=0.01, dont_retry_on=[KeyError])
    def key_error() -> None:
        raise KeyError("x")

    @app.task(max_retries=3, backoff=0.01, retry_on=[ConnectionError])
    def value_error() -> None:
        raise ValueError("x")

    jobs = [await key_error.adelay(), await value_error.adelay()]
    await Worker(app).run_until_idle()
    for job in jobs:
        await job.arefresh()
        assert (job.status, job.attempts) == (JobStatus.DEAD, 1)


async def test_task_can_ask_for_a_retry_with_a_delay(app: App) -> None:
    attempts: list[int] = []

    @app.task(max_retries=1)
    def polls() -> str:
        attempts.append(job_context().attempt)
        if len(attempts) == 1:
            raise Retry(delay=0.1)
        return "ready"

    job = await polls.adelay()
    await Worker(app).run_until_idle()
    assert await job.aresult(timeout=5) == "ready"
    assert attempts == [1, 2]


async def test_unknown_task_and_undecodable_message_are_dead_lettered_and_work_goes_on(
    app: App,
) -> None:
    @app.task
    def fine() -> int:
        return 1

    job = await fine.adelay()
    broker = await app.abroker()
    await broker.publish(Message(b"{}", routing_key="default", headers={"task": "gone.task"}))
    await broker.publish(
        Message(b"\xff not json", routing_key="default", headers={"task": fine.name})
    )
    await Worker(app).run_until_idle()
    assert await job.aresult(timeout=5) == 1
    dead = await app.adead_letters()
    reasons = sorted(d.error_message or "" for d in dead)
    assert len(dead) == 2
    assert any("unknown task 'gone.task'" in reason for reason in reasons)


async def test_same_idempotency_key_returns_the_same_job(app: App) -> None:
    runs: list[str] = []

    @app.task(idempotency_key=lambda order: f"invoice-{order}")
    def invoice(order: int) -> None:
        runs.append(str(order))

    first = await invoice.adelay(7)
    second = await invoice.adelay(7)
    assert first.id == second.id
    await Worker(app).run_until_idle()
    assert runs == ["7"]


async def test_a_payment_key_reused_with_another_amount_is_refused(app: App) -> None:
    @app.task
    def charge(customer: str, cents: int) -> None:
        return None

    @app.task
    def refund(customer: str, cents: int) -> None:
        return None

    paid = await charge.asend(["ada", 500], idempotency_key="order-17")
    assert (await charge.asend(["ada", 500], idempotency_key="order-17")).id == paid.id
    with pytest.raises(IdempotencyConflict, match="'order-17' already names job"):
        await charge.asend(["ada", 900], idempotency_key="order-17")
    with pytest.raises(IdempotencyConflict):
        refund.send(["ada", 500], idempotency_key="order-17")
    assert (await (await app.abroker()).queue_stats("default")).ready == 1


async def test_worker_skips_a_job_whose_key_already_succeeded(app: App) -> None:
    runs: list[int] = []

    @app.task(idempotency_window=0.0)
    def charge(amount: int) -> None:
        runs.append(amount)

    await charge.asend([5], idempotency_key="charge-1")
    await Worker(app).run_until_idle()
    await charge.asend([5], idempotency_key="charge-1")  # outside the window: a new job
    await Worker(app).run_until_idle()
    assert runs == [5]


async def test_async_task_past_its_timeout_is_cancelled_and_dead_lettered(app: App) -> None:
    @app.task(timeout=0.1, max_retries=0)
    async def hangs() -> None:
        await asyncio.sleep(10)

    job = await hangs.adelay()
    started = time.monotonic()
    await Worker(app).run_until_idle()
    assert time.monotonic() - started < 5
    await job.arefresh()
    assert job.status is JobStatus.DEAD
    assert "TaskTimeout" in job.error["type"]


async def test_thread_task_past_its_timeout_counts_as_failed(app: App) -> None:
    @app.task(timeout=0.05, max_retries=0)
    def slow() -> None:
        time.sleep(0.2)

    job = await slow.adelay()
    await Worker(app).run_until_idle()
    await job.arefresh()
    assert job.status is JobStatus.DEAD
    assert "TaskTimeout" in job.error["type"]


async def test_running_task_reports_progress(app: App) -> None:
    seen: list[object] = []

    @app.task
    async def report() -> None:
        await job_context().aset_progress({"done": 1, "total": 2})
        seen.append((await app.ajob(job_context().job_id)).progress)

    await report.adelay()
    await Worker(app).run_until_idle()
    assert seen == [{"done": 1, "total": 2}]


async def test_cancelled_job_never_runs(app: App) -> None:
    runs: list[int] = []

    @app.task
    def work() -> None:
        runs.append(1)

    job = await work.asend(delay=0.2)
    assert await job.acancel()
    assert job.status is JobStatus.CANCELLED
    await Worker(app).run_until_idle()
    assert runs == []


async def test_one_submission_of_mixed_queues_delays_and_keys_links_each_job_to_its_message(
    app: App,
) -> None:
    ran: list[tuple[str, int]] = []

    @app.task(queue="a")
    def on_a(n: int) -> int:
        ran.append(("a", n))
        return n

    @app.task(queue="b")
    def on_b(n: int) -> int:
        ran.append(("b", n))
        return n

    submissions = [
        on_a.submission((1,)),
        on_a.submission((2,)),
        on_b.submission((3,)),
        on_a.submission((4,), delay=0.3),
        on_a.submission((5,), idempotency_key="five"),
        on_a.submission((6,)),
        on_a.submission((5,), idempotency_key="five"),
        on_a.submission((7,)),
    ]
    jobs = await app.asubmit(submissions)
    assert jobs[6].id == jobs[4].id
    for cancelled in (jobs[1], jobs[3], jobs[5]):  # cancelling removes that job's own message
        assert await cancelled.acancel()
    await Worker(app, queues=["a", "b"]).run_until_idle()
    await asyncio.sleep(0.35)  # past the delay: the cancelled delayed job stays gone
    await Worker(app, queues=["a", "b"]).run_until_idle()
    assert sorted(ran) == [("a", 1), ("a", 5), ("a", 7), ("b", 3)]
    assert [await job.aresult(timeout=1) for job in (jobs[0], jobs[2], jobs[4], jobs[7])] == [
        1, 3, 5, 7
    ]  # fmt: skip


async def test_result_times_out_while_no_worker_runs(app: App) -> None:
    @app.task
    def idle() -> None:
        return None

    job = await idle.adelay()
    with pytest.raises(ResultTimeout) as timed_out:
        await job.aresult(timeout=0.05)
    location = app.broker_location
    assert location.startswith("sqlite:////")  # the file, as an absolute path
    assert f"it is queued, and no worker is running on {location}" in str(timed_out.value)


async def test_a_result_timeout_says_no_worker_consumes_the_jobs_queue(app: App) -> None:
    @app.task(queue="emails")
    def send() -> None:
        return None

    job = await send.adelay()
    elsewhere = Worker(app, queues=["reports"])
    running = asyncio.create_task(elsewhere.run())
    try:
        for _ in range(500):
            if await (await app.aresults()).list_workers():
                break
            await asyncio.sleep(0.01)
        with pytest.raises(ResultTimeout) as timed_out:
            await job.aresult(timeout=0.05)
        assert "no worker on sqlite:///" in str(timed_out.value)
        assert "consumes queue 'emails' (the live workers read reports)" in str(timed_out.value)
        assert "--queues emails" in str(timed_out.value)
    finally:
        elsewhere.stop()
        await running


async def test_reading_a_jobs_status_asks_the_store_each_time(app: App) -> None:
    started, failing = asyncio.Event(), asyncio.Event()

    @app.task(max_retries=1, backoff=30.0)
    async def flaky() -> None:
        started.set()
        await failing.wait()
        raise ConnectionError("smtp down")

    job = await flaky.adelay()
    assert job.status is JobStatus.QUEUED
    worker = Worker(app, concurrency=1)
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(started.wait(), 10)
        assert (job.status, job.attempts) == (JobStatus.RUNNING, 1)
        failing.set()
        for _ in range(500):
            if await job.astatus() is JobStatus.RETRYING:
                break
            await asyncio.sleep(0.01)
        assert job.refresh().record.status is JobStatus.RETRYING
        assert job.next_attempt_at == pytest.approx(time.time() + 30.0, abs=3.0)
        assert job.error["type"] == "ConnectionError"
    finally:
        worker.stop(graceful=False)
        await running


async def test_strict_queue_priority_runs_high_before_low(app: App) -> None:
    order: list[str] = []

    @app.task(queue="low")
    def low() -> None:
        order.append("low")

    @app.task(queue="high")
    def high() -> None:
        order.append("high")

    for _ in range(3):
        await low.adelay()
        await high.adelay()
    await Worker(app, queues=["high", "low"], concurrency=1, prefetch=1).run_until_idle()
    assert order == ["high"] * 3 + ["low"] * 3


async def test_a_worker_without_queues_consumes_every_queue_its_tasks_declare(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    order: list[str] = []

    @app.task(queue="emails")
    def send_email(n: int) -> None:
        order.append(f"email{n}")

    @app.task
    def report(n: int) -> None:
        order.append(f"report{n}")

    for n in range(20):
        await report.adelay(n)
    await send_email.adelay(0)
    worker = Worker(app, concurrency=1, prefetch=1)
    assert worker.queues == ("default", "emails")
    with caplog.at_level(logging.INFO, logger="conveyor.worker"):
        await worker.run_until_idle()
    assert sorted(order) == sorted([*(f"report{n}" for n in range(20)), "email0"])
    assert order.index("email0") < 3  # taken in turn: a busy default queue starves no other
    (banner,) = [r.getMessage() for r in caplog.records if r.name == "conveyor.worker"]
    assert "queues default, emails (in turn)" in banner
    assert "send_email" in banner


async def test_the_worker_logs_each_retry_and_each_job_it_gives_up_on(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task(max_retries=1, backoff=0.01)
    def flaky() -> None:
        raise ConnectionError("smtp down")

    @app.task(dont_retry_on=[KeyError], dead_letter=False)
    def lookup() -> None:
        raise KeyError("missing")

    @app.task
    def fine() -> int:
        return 1

    retried, failed, succeeded = await flaky.adelay(), await lookup.adelay(), await fine.adelay()
    with caplog.at_level(logging.DEBUG, logger="conveyor.worker"):
        await Worker(app, concurrency=1).run_until_idle()
    lines = {
        (record.job_id, record.__dict__["attempt"]): (
            record.levelname,
            record.__dict__["reason"],
            record.getMessage(),
        )
        for record in caplog.records
        if hasattr(record, "job_id")
    }
    level, reason, line = lines[(retried.id, 1)]
    assert (level, reason) == ("WARNING", "retrying")
    assert f"job {retried.id} {flaky.name} attempt 1 failed with ConnectionError: smtp down" in line
    assert "retry 1 of 1 in 0.01s" in line
    level, reason, line = lines[(retried.id, 2)]
    assert (level, reason) == ("ERROR", "retries_exhausted")
    assert "; retries_exhausted (retries exhausted after 2 attempts), " in line
    assert line.endswith("dead-lettered")
    level, reason, line = lines[(failed.id, 1)]
    assert (level, reason) == ("ERROR", "permanent_error")
    assert "permanent_error (KeyError is in dont_retry_on)" in line
    assert line.endswith("marked failed (dead_letter=False)")
    debug = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
    assert any(f"job {succeeded.id} {fine.name} attempt 1 succeeded in" in m for m in debug)


async def test_the_worker_sums_up_what_it_did_at_each_interval(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task(max_retries=0)
    async def slow(n: int) -> None:
        await asyncio.sleep(0.05)
        if n == 0:
            raise ValueError("first one fails")

    for n in range(6):
        await slow.adelay(n)
    with caplog.at_level(logging.INFO, logger="conveyor.worker"):
        await Worker(app, concurrency=1, summary_interval=0.1).run_until_idle()
    summaries = [r for r in caplog.records if hasattr(r, "processed")]
    assert summaries
    assert sum(r.processed for r in summaries) <= 6
    assert all(r.processed > 0 for r in summaries)
    assert "jobs in the last 0.1 s" in summaries[0].getMessage()
    assert summaries[0].__dict__["failed"] == 1


async def test_dead_letters_are_replayed_to_run_again_and_purged(app: App) -> None:
    fixed = False

    @app.task(max_retries=0)
    def fragile(n: int) -> int:
        if not fixed:
            raise ValueError("not yet")
        return n

    jobs = [await fragile.adelay(n) for n in range(3)]
    await Worker(app).run_until_idle()
    assert len(await app.adead_letters()) == 3
    fixed = True
    assert await app.areplay_dead_letters(job_ids=[jobs[0].id]) == 1
    await Worker(app).run_until_idle()
    assert await jobs[0].aresult(timeout=5) == 0
    assert await app.areplay_dead_letters(to_queue="elsewhere") == 2
    broker = await app.abroker()
    assert (await broker.queue_stats("elsewhere")).ready == 2
    assert await app.apurge_dead_letters() == 0
    assert (await broker.queue_stats(dead_letter_queue("default"))).depth == 0


async def test_rate_limit_spaces_out_runs_across_the_worker(app: App) -> None:
    starts: list[float] = []

    @app.task(rate_limit="5/s")
    def limited() -> None:
        starts.append(time.monotonic())

    for _ in range(8):
        await limited.adelay()
    await Worker(app, concurrency=4).run_until_idle()
    assert len(starts) == 8
    # a burst of 5, then the bucket refills at 5 per second
    assert max(starts) - min(starts) >= 0.45


async def test_process_task_runs_in_a_child_and_is_killed_past_its_timeout(app: App) -> None:
    from tests.integration import process_tasks

    process_app = process_tasks.app
    process_app.broker_url = app.broker_url
    try:
        ok = await process_tasks.pid_of_child.adelay(21)
        hung = await process_tasks.sleeps_too_long.adelay(30)
        started = time.monotonic()
        await Worker(process_app, processes=1).run_until_idle()
        assert time.monotonic() - started < 20
        child_pid, doubled = await ok.aresult(timeout=5)
        assert doubled == 42
        assert child_pid != os.getpid()
        await hung.arefresh()
        assert hung.status is JobStatus.DEAD
        assert "TaskTimeout" in hung.error["type"]
    finally:
        await process_app.aclose()


def test_sync_code_enqueues_and_waits_without_an_event_loop(sqlite_url: str) -> None:
    app = App(sqlite_url)

    @app.task
    def double(x: int) -> int:
        return 2 * x

    try:
        job = double.delay(21)
        assert app.job(job.id).status is JobStatus.QUEUED

        async def drain() -> None:
            await Worker(app).run_until_idle()
            await app.aclose()

        asyncio.run(drain())
        assert job.result(timeout=5) == 42
    finally:
        app.close()


def test_sync_delays_from_many_threads_make_their_own_writes_while_the_apps_loop_is_busy(
    sqlite_url: str,
) -> None:
    app = App(sqlite_url)

    @app.task
    def echo(n: int) -> int:
        return n

    released = threading.Event()

    async def hold_the_loop(broker: object) -> bool:
        return released.wait(timeout=60)  # blocks the App's background loop

    def send(first: int) -> list[str]:
        return [echo.delay(n).id for n in range(first, first + 50)]

    try:
        echo.delay(-1)  # the first call declares the queue, on the background loop
        with concurrent.futures.ThreadPoolExecutor(9) as pool:
            holder = pool.submit(app.call_sync, hold_the_loop)
            senders = [pool.submit(send, first) for first in range(0, 400, 50)]
            ids = [job_id for sender in senders for job_id in sender.result(timeout=50)]
            released.set()
            assert holder.result(timeout=10) is True  # the loop was held throughout
        assert len(set(ids)) == 400

        async def drain() -> list[object]:
            await Worker(app).run_until_idle()
            results = [await (await app.ajob(job_id)).aresult(timeout=5) for job_id in ids]
            await app.aclose()
            return results

        assert asyncio.run(drain()) == list(range(400))
    finally:
        released.set()
        app.close()


async def test_higher_priority_jobs_run_first_within_a_queue(app: App) -> None:
    order: list[int] = []

    @app.task
    def record(level: int) -> None:
        order.append(level)

    for level in (0, 5, 9, 1):
        await record.asend([level], priority=level)
    await Worker(app, concurrency=1, prefetch=1).run_until_idle()
    assert order == [9, 5, 1, 0]


async def test_task_without_dead_letters_ends_failed(app: App) -> None:
    @app.task(max_retries=0, dead_letter=False)
    def best_effort() -> None:
        raise RuntimeError("cache warm-up failed")

    job = await best_effort.adelay()
    await Worker(app).run_until_idle()
    await job.arefresh()
    assert job.status is JobStatus.FAILED
    assert await app.adead_letters() == []


async def test_job_records_expire_after_their_result_ttl(app: App) -> None:
    @app.task(result_ttl=0.1)
    def short_lived() -> int:
        return 1

    job = await short_lived.adelay()
    await Worker(app).run_until_idle()
    assert await job.aresult(timeout=5) == 1
    await asyncio.sleep(1.2)  # maintenance runs at most once a second
    broker = await app.abroker()
    await broker.queue_stats("default")
    with pytest.raises(JobNotFound):
        await app.ajob(job.id)


def test_a_job_sent_from_sync_code_on_memory_reaches_an_async_worker_in_the_process() -> None:
    app = App("memory://")

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    job = add.delay(2, 3)  # through the App's background loop

    async def work() -> int:
        counts = await Worker(app).run_until_idle()
        assert await (await app.ajob(job.id)).aresult(timeout=5) == 5
        await app.aclose()
        return counts.processed

    try:
        assert asyncio.run(work()) == 1
        assert job.result(timeout=5) == 5  # the sync side sees the same store
    finally:
        app.close()
