"""Figures for operators: job records by task and status, run-time histograms, exchanges."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor import Broker, Capability, ExchangeSpec, ExchangeType, Message, QueueSpec
from conveyor.brokers.results import JobStart
from conveyor.brokers.types import JobStatus, JobSubmission, Settlement, TaskStats
from conveyor.errors import ConfigError
from conveyor.tasks.states import JobStates

NEEDS = (Capability.QUEUES, Capability.DEAD_LETTER)


def submission(queue: str, task: str, **options: float) -> JobSubmission:
    return JobSubmission(Message(b"{}", routing_key=queue), queue=queue, task=task, **options)  # type: ignore[arg-type]


def by_task(stats: list[TaskStats]) -> dict[str, TaskStats]:
    return {entry.task: entry for entry in stats}


@pytest.mark.needs(*NEEDS)
async def test_job_stats_count_records_by_task_and_status(
    broker: Broker, states: JobStates, name: str
) -> None:
    dlq = f"{name}.dlq"
    await broker.declare_queue(QueueSpec(dlq))
    await broker.declare_queue(
        QueueSpec(name, dead_letter_exchange="", dead_letter_routing_key=dlq)
    )
    await states.submit(
        [submission(name, "mail") for _ in range(4)]
        + [submission(name, "mail", delay=60), submission(name, "bill")]
    )
    first, second, third = await broker.receive(name, max_messages=3)
    now = time.time()
    await states.settle(
        [
            Settlement(first, JobStatus.SUCCEEDED, now - 0.3, result=1),
            Settlement(second, JobStatus.DEAD, now - 2.0, error={"type": "E"}),
        ]
    )
    await states.start([JobStart(third.message.id, 1, now, "w1")])  # running

    stats = by_task(await states.results.job_stats(buckets=[0.25, 1.0]))
    assert [entry.task for entry in await states.results.job_stats()] == ["bill", "mail"]
    mail = stats["mail"]
    assert dict(mail.statuses) == {
        JobStatus.SUCCEEDED: 1,
        JobStatus.DEAD: 1,
        JobStatus.RUNNING: 1,
        JobStatus.QUEUED: 1,
        JobStatus.SCHEDULED: 1,
    }
    assert mail.duration_buckets == ((0.25, 0), (1.0, 1))  # 2 s is past the last bound
    assert mail.duration_count == 2
    assert mail.duration_sum == pytest.approx(2.3, abs=0.1)
    bill = stats["bill"]
    assert dict(bill.statuses) == {JobStatus.QUEUED: 1}
    assert bill.duration_count == 0
    assert bill.duration_buckets == ((0.25, 0), (1.0, 0))


@pytest.mark.needs(*NEEDS)
async def test_job_stats_since_counts_only_records_updated_since(
    broker: Broker, states: JobStates, name: str
) -> None:
    await broker.declare_queue(QueueSpec(name))
    await states.submit([submission(name, "old")])
    later = time.time() + 0.05
    await asyncio.sleep(0.1)
    await states.submit([submission(name, "new")])
    assert [entry.task for entry in await states.results.job_stats(since=later)] == ["new"]
    assert await states.results.job_stats(since=time.time() + 60) == []


@pytest.mark.needs(Capability.QUEUES)
@pytest.mark.parametrize("buckets", [[1.0, 0.5], [0.0, 1.0], [1.0, 1.0], [float("inf")]])
async def test_job_stats_refuse_bad_buckets(states: JobStates, buckets: list[float]) -> None:
    with pytest.raises(ConfigError, match="buckets"):
        await states.results.job_stats(buckets=buckets)


@pytest.mark.needs(Capability.EXCHANGES)
async def test_list_exchanges_names_declared_exchanges_in_order(broker: Broker, name: str) -> None:
    assert await broker.list_exchanges() == []
    await broker.declare_exchange(ExchangeSpec(f"{name}-b", ExchangeType.FANOUT))
    await broker.declare_exchange(ExchangeSpec(f"{name}-a", ExchangeType.TOPIC, f"{name}-b"))
    assert await broker.list_exchanges() == [
        ExchangeSpec(f"{name}-a", ExchangeType.TOPIC, f"{name}-b"),
        ExchangeSpec(f"{name}-b", ExchangeType.FANOUT),
    ]
    await broker.delete_exchange(f"{name}-b")
    assert [spec.name for spec in await broker.list_exchanges()] == [f"{name}-a"]
