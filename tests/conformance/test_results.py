"""The job state machine on each broker and its result store; browsing and moving.

Brokers without a result store of their own run these with the Redis one (see conftest).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor import Broker, Capability, Message, QueueSpec
from conveyor.brokers import open_results
from conveyor.brokers.results import JobStart
from conveyor.brokers.types import (
    JobQuery,
    JobStatus,
    JobSubmission,
    QueueSample,
    Settlement,
    WorkerInfo,
)
from conveyor.errors import ConfigError, ConveyorError, IdempotencyConflict, JobNotFound
from conveyor.tasks.states import JobStates

NEEDS = (Capability.QUEUES, Capability.DEAD_LETTER)


async def declare_with_dlq(broker: Broker, name: str) -> str:
    dlq = f"{name}.dlq"
    await broker.declare_queue(QueueSpec(dlq))
    await broker.declare_queue(
        QueueSpec(name, dead_letter_exchange="", dead_letter_routing_key=dlq)
    )
    return dlq


def only_in_one_transaction(states: JobStates) -> None:
    """These guarantees hold where message and record change together (ATOMIC_SETTLE with
    the broker's own results); elsewhere the outcome is stored first (tasks/states.py)."""
    if not states.atomic:
        pytest.skip("settled in two steps with a result store of its own")


def submission(name: str, body: bytes = b"{}", **options: object) -> JobSubmission:
    return JobSubmission(Message(body, routing_key=name), queue=name, task="t", **options)  # type: ignore[arg-type]


@pytest.mark.needs(*NEEDS)
async def test_submitted_job_is_queued_and_its_message_enqueued(
    broker: Broker, states: JobStates, name: str
) -> None:
    await declare_with_dlq(broker, name)
    (record,) = await states.submit([submission(name)])
    assert record.status is JobStatus.QUEUED
    assert (await states.results.get_job(record.id)).status is JobStatus.QUEUED
    (delivery,) = await broker.receive(name)
    assert delivery.message.id == record.id


@pytest.mark.needs(*NEEDS)
async def test_delayed_job_is_scheduled_until_due(
    broker: Broker, states: JobStates, name: str
) -> None:
    await declare_with_dlq(broker, name)
    (record,) = await states.submit([submission(name, delay=30)])
    assert record.status is JobStatus.SCHEDULED
    assert record.scheduled_for is not None
    assert record.scheduled_for > time.time() + 25
    assert await broker.receive(name) == []


@pytest.mark.needs(*NEEDS, Capability.ATOMIC_SETTLE)
async def test_job_is_running_while_its_message_is_leased(
    broker: Broker, states: JobStates, name: str
) -> None:
    only_in_one_transaction(states)
    await declare_with_dlq(broker, name)
    (record,) = await states.submit([submission(name)])
    (delivery,) = await broker.receive(name)
    assert (await states.results.get_job(record.id)).status is JobStatus.RUNNING
    await broker.nack(delivery)
    assert (await states.results.get_job(record.id)).status is JobStatus.QUEUED


@pytest.mark.needs(*NEEDS)
async def test_same_idempotency_key_within_window_returns_the_existing_job(
    broker: Broker, states: JobStates, name: str
) -> None:
    await declare_with_dlq(broker, name)
    first, second = await states.submit(
        [submission(name, idempotency_key="k1"), submission(name, idempotency_key="k1")]
    )
    (third,) = await states.submit([submission(name, idempotency_key="k1")])
    assert first.id == second.id == third.id
    assert (await broker.queue_stats(name)).ready == 1


@pytest.mark.needs(*NEEDS)
async def test_an_idempotency_key_sent_with_another_request_is_refused_and_nothing_is_sent(
    broker: Broker, states: JobStates, name: str
) -> None:
    await declare_with_dlq(broker, name)
    (first,) = await states.submit([submission(name, idempotency_key="pay-1", request_digest="a")])
    (again,) = await states.submit([submission(name, idempotency_key="pay-1", request_digest="a")])
    assert again.id == first.id
    other = submission(name, idempotency_key="pay-1", request_digest="b")
    fresh = submission(name, idempotency_key="pay-2", request_digest="c")
    with pytest.raises(IdempotencyConflict, match=f"key 'pay-1' already names job '{first.id}'"):
        await states.submit([fresh, other])
    assert (await broker.queue_stats(name)).ready == 1
    with pytest.raises(JobNotFound):
        await states.results.get_job(fresh.message.id)
    (retried,) = await states.submit([fresh])  # the refused batch left its key unused
    assert retried.id == fresh.message.id


@pytest.mark.needs(*NEEDS)
async def test_idempotency_key_outside_its_window_makes_a_new_job(
    broker: Broker, states: JobStates, name: str
) -> None:
    await declare_with_dlq(broker, name)
    (first,) = await states.submit([submission(name, idempotency_key="k", idempotency_window=0.05)])
    await asyncio.sleep(0.1)
    (second,) = await states.submit(
        [submission(name, idempotency_key="k", idempotency_window=0.05)]
    )
    assert first.id != second.id
    assert (await broker.queue_stats(name)).ready == 2


@pytest.mark.needs(*NEEDS)
async def test_settling_success_acks_and_stores_the_result(
    broker: Broker, states: JobStates, name: str
) -> None:
    await declare_with_dlq(broker, name)
    (record,) = await states.submit([submission(name)])
    (delivery,) = await broker.receive(name)
    started = time.time()
    lost = await states.settle(
        [Settlement(delivery, JobStatus.SUCCEEDED, started, result={"sent": 3})]
    )
    assert lost == []
    job = await states.results.get_job(record.id)
    assert job.status is JobStatus.SUCCEEDED
    assert job.result == {"sent": 3}
    assert job.attempts == 1
    assert job.first_attempt_at == pytest.approx(started, abs=0.002)
    assert (await broker.queue_stats(name)).at_least == 0
    assert await states.results.succeeded_keys(["nope"]) == set()


@pytest.mark.needs(*NEEDS)
async def test_results_and_errors_of_any_text_come_back_exactly(
    broker: Broker, states: JobStates, name: str
) -> None:
    text = 'naïve 日本 😀 "quoted" back\\slash \n tab\t [1,2] {"x": null} '
    await declare_with_dlq(broker, name)
    succeeding, failing = await states.submit([submission(name), submission(name)])
    deliveries = {d.message.id: d for d in await broker.receive(name, max_messages=2, wait=1)}
    await states.start([JobStart(job_id, 1, time.time(), "w1") for job_id in deliveries])
    error = {"type": "ValueError", "message": text}
    await states.settle(
        [
            Settlement(deliveries[succeeding.id], JobStatus.SUCCEEDED, time.time(), result=[text]),
            Settlement(deliveries[failing.id], JobStatus.FAILED, time.time(), error=error),
        ]
    )
    assert (await states.results.get_job(succeeding.id)).result == [text]
    assert (await states.results.get_job(failing.id)).error == error


@pytest.mark.needs(*NEEDS)
async def test_settling_a_retry_requeues_after_the_delay(
    broker: Broker, states: JobStates, name: str
) -> None:
    await declare_with_dlq(broker, name)
    (record,) = await states.submit([submission(name)])
    (delivery,) = await broker.receive(name)
    error = {"type": "TimeoutError", "message": "smtp", "traceback": "..."}
    await states.settle(
        [Settlement(delivery, JobStatus.RETRYING, time.time(), error=error, retry_delay=0.3)]
    )
    job = await states.results.get_job(record.id)
    assert job.status is JobStatus.RETRYING
    assert job.error == error
    assert await broker.receive(name) == []
    (again,) = await broker.receive(name, wait=2)
    assert again.delivery_count == 2


@pytest.mark.needs(*NEEDS)
async def test_settling_dead_moves_the_message_to_the_dlq_with_a_failure_record(
    broker: Broker, states: JobStates, name: str
) -> None:
    dlq = await declare_with_dlq(broker, name)
    (record,) = await states.submit([submission(name, b'{"x":1}')])
    (delivery,) = await broker.receive(name)
    error = {"type": "ValueError", "message": "bad address", "traceback": "Traceback..."}
    await states.settle([Settlement(delivery, JobStatus.DEAD, 1000.0, worker="w1", error=error)])
    assert (await states.results.get_job(record.id)).status is JobStatus.DEAD
    (dead,) = await broker.receive(dlq)
    assert dead.message.id == record.id
    assert dead.message.body == b'{"x":1}'
    failure = dead.message.headers["x-failure"]
    assert failure["error_type"] == "ValueError"
    assert failure["error_message"] == "bad address"
    assert failure["traceback"] == "Traceback..."
    assert failure["attempts"] == 1
    assert failure["queue"] == name
    assert failure["worker"] == "w1"
    assert dead.message.headers["x-death"][0]["queue"] == name


@pytest.mark.needs(*NEEDS, Capability.LEASES, Capability.FENCED_ACKS)
async def test_settling_a_lapsed_lease_changes_nothing(
    broker: Broker, states: JobStates, name: str
) -> None:
    only_in_one_transaction(states)
    await declare_with_dlq(broker, name)
    (record,) = await states.submit([submission(name)])
    (delivery,) = await broker.receive(name, lease_timeout=0.1)
    await asyncio.sleep(0.2)
    settlement = Settlement(delivery, JobStatus.SUCCEEDED, time.time(), result=1)
    assert await states.settle([settlement]) == [settlement]
    assert (await states.results.get_job(record.id)).status is JobStatus.QUEUED
    assert (await broker.queue_stats(name)).ready == 1


@pytest.mark.needs(*NEEDS)
async def test_moving_dead_letters_back_requeues_their_jobs(
    broker: Broker, states: JobStates, name: str
) -> None:
    dlq = await declare_with_dlq(broker, name)
    records = await states.submit([submission(name), submission(name)])
    deliveries = await broker.receive(name, max_messages=2)
    await states.settle(
        [Settlement(d, JobStatus.DEAD, time.time(), error={"type": "E"}) for d in deliveries]
    )
    moved = await states.replay(dlq, name, job_ids=[records[0].id])
    assert moved == 1
    assert (await states.results.get_job(records[0].id)).status is JobStatus.QUEUED
    assert (await states.results.get_job(records[1].id)).status is JobStatus.DEAD
    (replayed,) = await broker.receive(name)
    assert replayed.message.id == records[0].id
    assert replayed.delivery_count == 1
    assert await states.replay(dlq, name) == 1


@pytest.mark.needs(Capability.QUEUES, Capability.BROWSE)
async def test_browse_shows_messages_in_delivery_order_without_leasing(
    broker: Broker, states: JobStates, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    await broker.publish_batch([Message(bytes([i]), routing_key=name) for i in range(5)])
    page = await broker.browse(name, limit=2, offset=1)
    assert [m.message.body for m in page] == [b"\x01", b"\x02"]
    assert not any(m.leased for m in page)
    assert (await broker.queue_stats(name)).ready == 5


@pytest.mark.needs(*NEEDS, Capability.ATOMIC_SETTLE)
async def test_progress_is_stored_and_cancel_only_stops_jobs_not_started(
    broker: Broker, states: JobStates, name: str
) -> None:
    only_in_one_transaction(states)
    await declare_with_dlq(broker, name)
    waiting, started = await states.submit([submission(name), submission(name)])
    assert await states.results.cancel_job(waiting.id)
    assert (await states.results.get_job(waiting.id)).status is JobStatus.CANCELLED
    (delivery,) = await broker.receive(name)
    assert delivery.message.id == started.id
    await states.results.set_progress(started.id, {"done": 5, "total": 10})
    assert (await states.results.get_job(started.id)).progress == {"done": 5, "total": 10}
    assert not await states.results.cancel_job(started.id)
    with pytest.raises(JobNotFound):
        await states.results.get_job("no-such-job")


@pytest.mark.needs(*NEEDS)
async def test_workers_heartbeat_list_and_forget(
    broker: Broker, states: JobStates, name: str
) -> None:
    now = time.time()
    worker = WorkerInfo(name, "host", 42, ("default",), now, now, running=2, processed=9)
    await states.results.heartbeat(worker)
    (listed,) = [w for w in await states.results.list_workers() if w.id == name]
    assert listed.queues == ("default",)
    assert listed.processed == 9
    assert listed.heartbeat_at >= now - 0.01
    await states.results.forget_worker(name)
    assert all(w.id != name for w in await states.results.list_workers())


@pytest.mark.needs(*NEEDS)
async def test_rate_limit_bucket_allows_a_burst_then_says_how_long_to_wait(
    broker: Broker, states: JobStates, name: str
) -> None:
    waits = [await states.results.acquire_rate(name, per_second=10, burst=3) for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert 0.05 < waits[3] <= 0.1
    await asyncio.sleep(waits[3] + 0.01)
    assert await states.results.acquire_rate(name, per_second=10, burst=3) == 0.0


@pytest.mark.needs(*NEEDS)
async def test_started_jobs_are_running_and_a_finished_job_keeps_its_first_attempt(
    broker: Broker, states: JobStates, name: str
) -> None:
    await declare_with_dlq(broker, name)
    (record,) = await states.submit([submission(name)])
    (delivery,) = await broker.receive(name)
    first = time.time() - 5
    await states.start([JobStart(record.id, 1, first, "w1")])
    if not states.atomic:  # atomic brokers read running off the live lease instead
        assert (await states.results.get_job(record.id)).status is JobStatus.RUNNING
    await states.settle([Settlement(delivery, JobStatus.RETRYING, first, retry_delay=0.0)])
    (again,) = await broker.receive(name, wait=2)
    await states.start([JobStart(record.id, 2, time.time(), "w1")])
    await states.settle([Settlement(again, JobStatus.SUCCEEDED, time.time(), result="ok")])
    job = await states.results.get_job(record.id)
    assert job.status is JobStatus.SUCCEEDED
    assert job.attempts == 2
    assert job.first_attempt_at == pytest.approx(first, abs=0.002)


@pytest.mark.needs(*NEEDS)
async def test_starts_settled_with_other_outcomes_are_recorded_before_them(
    broker: Broker, states: JobStates, name: str
) -> None:
    await declare_with_dlq(broker, name)
    finishing, running = await states.submit([submission(name), submission(name)])
    first, _ = await broker.receive(name, max_messages=2)
    begun = time.time() - 3
    lost = await states.settle(
        [Settlement(first, JobStatus.SUCCEEDED, begun, result=1)],
        starts=[JobStart(running.id, 1, begun, "w1"), JobStart(finishing.id, 1, begun, "w1")],
    )
    assert lost == []
    done = await states.results.get_job(finishing.id)
    assert (done.status, done.result, done.attempts) == (JobStatus.SUCCEEDED, 1, 1)
    if not states.atomic:  # atomic brokers read running off the live lease instead
        still = await states.results.get_job(running.id)
        assert (still.status, still.attempts) == (JobStatus.RUNNING, 1)
        assert still.first_attempt_at == pytest.approx(begun, abs=0.002)
    await states.settle([], starts=[JobStart(running.id, 2, time.time(), "w1")])
    if not states.atomic:
        assert (await states.results.get_job(running.id)).attempts == 2


@pytest.mark.needs(*NEEDS)
async def test_a_first_attempt_shows_as_attempt_one_and_a_retry_shows_when_it_is_due(
    broker: Broker, states: JobStates, name: str
) -> None:
    await declare_with_dlq(broker, name)
    (record,) = await states.submit([submission(name)])
    (delivery,) = await broker.receive(name)
    await states.start([JobStart(record.id, 1, time.time(), "w1")])
    running = await states.results.get_job(record.id)
    assert (running.status, running.attempts) == (JobStatus.RUNNING, 1)
    failed_at = time.time()
    await states.settle([Settlement(delivery, JobStatus.RETRYING, failed_at, retry_delay=30.0)])
    waiting = await states.results.get_job(record.id)
    assert (waiting.status, waiting.attempts) == (JobStatus.RETRYING, 1)
    assert waiting.scheduled_for == pytest.approx(failed_at + 30.0, abs=2.0)


@pytest.mark.needs(*NEEDS)
async def test_job_records_are_listed_by_status_task_queue_and_time_newest_first(
    broker: Broker, states: JobStates, name: str
) -> None:
    other = f"{name}-other"
    await declare_with_dlq(broker, name)
    await declare_with_dlq(broker, other)
    mails = [
        JobSubmission(Message(b"{}", routing_key=name), queue=name, task="mail") for _ in range(3)
    ]
    report = JobSubmission(Message(b"{}", routing_key=other), queue=other, task="report")
    records = await states.submit([*mails, report])
    ids = [record.id for record in records]
    deliveries = {d.message.id: d for d in await broker.receive(name, max_messages=3, wait=1)}
    now = time.time()
    await states.start([JobStart(job_id, 1, now, "w1") for job_id in ids[:3]])
    await states.settle([Settlement(deliveries[ids[0]], JobStatus.SUCCEEDED, now, result=1)])
    await asyncio.sleep(0.01)
    await states.settle([Settlement(deliveries[ids[1]], JobStatus.DEAD, now, error={"type": "E"})])
    results = states.results

    everything = await results.list_jobs(JobQuery())
    assert everything.total == 4
    assert {record.id for record in everything.items} == set(ids)
    assert everything.items[0].id == ids[1]  # the last updated first
    assert [r.id for r in (await results.list_jobs(JobQuery(status=JobStatus.DEAD))).items] == [
        ids[1]
    ]
    running = await results.list_jobs(JobQuery(status=JobStatus.RUNNING))
    assert [record.id for record in running.items] == [ids[2]]
    queued = await results.list_jobs(JobQuery(status=JobStatus.QUEUED))
    assert [record.id for record in queued.items] == [ids[3]]
    by_task = await results.list_jobs(JobQuery(task="mail", limit=2, offset=1))
    assert (by_task.total, len(by_task.items)) == (3, 2)
    assert (await results.list_jobs(JobQuery(queue=other))).total == 1
    assert (await results.list_jobs(JobQuery(since=time.time() + 60))).total == 0


@pytest.mark.needs(*NEEDS)
async def test_cancelled_waiting_job_is_reported_and_a_finished_one_cannot_be_cancelled(
    broker: Broker, states: JobStates, name: str
) -> None:
    await declare_with_dlq(broker, name)
    waiting, started = await states.submit([submission(name), submission(name)])
    assert await states.results.cancel_job(waiting.id)
    assert (await states.results.get_job(waiting.id)).status is JobStatus.CANCELLED
    assert await states.results.cancelled([waiting.id, started.id]) == {waiting.id}
    deliveries = await broker.receive(name, max_messages=2, wait=1)
    finishing = next(d for d in deliveries if d.message.id == started.id)
    await states.results.set_progress(started.id, {"done": 5, "total": 10})
    assert (await states.results.get_job(started.id)).progress == {"done": 5, "total": 10}
    await states.settle([Settlement(finishing, JobStatus.SUCCEEDED, time.time())])
    assert not await states.results.cancel_job(started.id)
    with pytest.raises(JobNotFound):
        await states.results.get_job("no-such-job")


@pytest.mark.needs(*NEEDS)
async def test_a_failed_publish_discards_the_record_so_the_key_can_be_used_again(
    broker: Broker, states: JobStates, name: str
) -> None:
    keyed = submission(f"{name}-missing", idempotency_key=f"{name}-key")
    with pytest.raises(ConveyorError):
        await states.submit([keyed])  # no such queue: unroutable
    await declare_with_dlq(broker, name)
    (record,) = await states.submit([submission(name, idempotency_key=f"{name}-key")])
    assert (await states.results.get_job(record.id)).status is JobStatus.QUEUED
    (delivery,) = await broker.receive(name, wait=1)
    assert delivery.message.id == record.id


def sample(queue: str, at: float, depth: int | None = 1, **counters: int | None) -> QueueSample:
    figures = {"published": depth, "acked": depth, "dead_lettered": 0, **counters}
    return QueueSample(queue, at, depth, **figures)


@pytest.mark.needs(*NEEDS)
async def test_queue_samples_keep_one_per_slot_and_read_back_by_queue_and_time(
    broker: Broker, states: JobStates, name: str
) -> None:
    store = states.results
    first, second = f"{name}-a", f"{name}-b"
    await store.record_samples([sample(first, 1000.0, 1), sample(second, 1002.0, None)])
    await store.record_samples([sample(first, 1003.5, 7)], interval=5)  # same slot: dropped
    await store.record_samples([sample(first, 1005.0, 3, dead_lettered=2)], interval=5)
    kept = await store.samples(since=0)
    assert kept == {
        first: [sample(first, 1000.0, 1), sample(first, 1005.0, 3, dead_lettered=2)],
        second: [QueueSample(second, 1002.0, None, None, None, 0)],
    }
    assert await store.samples(since=0, queues=[second, f"{name}-none"]) == {second: kept[second]}
    assert await store.samples(since=1001, queues=[first]) == {first: kept[first][1:]}
    assert await store.samples(since=0, queues=[]) == {}
    assert await store.samples(since=1006) == {}


@pytest.mark.needs(*NEEDS)
async def test_queue_samples_past_the_retention_or_the_count_are_dropped(
    broker: Broker, states: JobStates, name: str
) -> None:
    store = states.results
    old, steady = f"{name}-old", f"{name}-steady"
    await store.record_samples([sample(old, 1000.0)], interval=1, retention=100)
    await store.record_samples([sample(steady, at) for at in range(1001, 1011)], interval=1)
    assert [s.at for s in (await store.samples(since=0))[steady]] == list(range(1001, 1011))
    # at most retention / interval + 1 per queue: the newest five
    await store.record_samples([sample(steady, 1015.0)], interval=5, retention=20)
    expected = [1007, 1008, 1009, 1010, 1015]
    assert [s.at for s in (await store.samples(since=0))[steady]] == expected
    assert old in await store.samples(since=0)
    await store.record_samples([sample(steady, 1200.0)], interval=1, retention=100)
    kept = await store.samples(since=0)
    assert old not in kept  # older than 100 s before the newest sample
    assert [s.at for s in kept[steady]] == [1200.0]
    for bad in ({"interval": 0}, {"retention": -1}, {"interval": float("nan")}):
        with pytest.raises(ConfigError, match="sample"):
            await store.record_samples([sample(steady, 1300.0)], **bad)


@pytest.mark.needs(*NEEDS)
async def test_two_stores_sampling_at_once_keep_one_intact_series(
    broker: Broker, states: JobStates, name: str
) -> None:
    if broker.private_store and states.atomic:
        pytest.skip("a store private to its connection has no second connection to race")
    other = open_results(states.results.url)
    await other.connect()
    try:
        for cycle in range(30):
            at = 1000.0 + 5 * cycle
            await asyncio.gather(
                states.results.record_samples([sample(name, at, 1)], interval=5),
                other.record_samples([sample(name, at + 0.3, 2)], interval=5),
            )
        series = (await other.samples(since=0))[name]
    finally:
        await other.close()
    assert len(series) == 30  # one per slot
    assert [int(s.at // 5) for s in series] == [200 + cycle for cycle in range(30)]
    for kept in series:  # each sample whole, as one of the two servers took it
        assert kept in (sample(name, kept.at, 1), sample(name, kept.at, 2))
        assert (kept.at % 5 == 0) == (kept.depth == 1)
