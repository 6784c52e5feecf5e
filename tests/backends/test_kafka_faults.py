"""The kafka:// backend under faults: a broker killed and restarted during a run (noida-db,
which keeps its data), and a group member killed (Tansu, which evicts it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections import Counter
from pathlib import Path

from conveyor import open_broker
from conveyor.brokers.base import Broker
from conveyor.brokers.stream_types import ProducerRecord, Record, TopicPartition, TopicSpec
from tests.kafka_server import NoidaServer, noida_server, tansu_server  # noqa: F401

SESSION_TIMEOUT_S = 6.0
JOIN_TIMEOUT_S = 40.0


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


async def produce_numbers(broker: Broker, topic: str, numbers: range) -> list[int]:
    """Produce ``numbers`` ten to a call, keyed; the ones the broker acknowledged."""
    acked: list[int] = []
    for start in range(numbers.start, numbers.stop, 10):
        chunk = range(start, min(start + 10, numbers.stop))
        records = [ProducerRecord(str(n).encode(), key=f"k{n % 7}".encode()) for n in chunk]
        await broker.produce(topic, records)
        acked += chunk
    return acked


def numbers_of(records: list[Record]) -> list[int]:
    return [int(record.value or b"") for record in records]


async def test_a_broker_restart_loses_nothing_acknowledged_and_the_group_resumes_from_its_commit(
    noida_server: NoidaServer,  # noqa: F811
) -> None:
    topic, group = unique("orders"), unique("billing")
    async with open_broker(f"kafka://{noida_server.address}?timeout=30") as broker:
        await broker.create_topic(TopicSpec(topic, 2))
        acked = await produce_numbers(broker, topic, range(50))
        options = {"auto_offset_reset": "earliest", "enable_auto_commit": False}
        async with broker.open_group([topic], group, **options) as first:
            committed: list[Record] = []
            while len(committed) < 30:
                committed += await first.poll(timeout=1, max_records=30 - len(committed))
            await first.commit()
            past_commit: list[Record] = []
            while len(committed) + len(past_commit) < 50:
                past_commit += await first.poll(timeout=1)
        await noida_server.saved_since(time.time())  # it writes its data once a second
        noida_server.kill()
        during_outage = asyncio.create_task(produce_numbers(broker, topic, range(50, 100)))
        await asyncio.sleep(1.5)
        assert not during_outage.done()
        noida_server.start()
        acked += await during_outage
        async with broker.open_group([topic], group, **options) as again:
            resumed: list[Record] = []
            async with asyncio.timeout(JOIN_TIMEOUT_S):
                while len(resumed) < 70:
                    resumed += await again.poll(timeout=1)
        stored = await broker.fetch(
            {TopicPartition(topic, 0): 0, TopicPartition(topic, 1): 0}, max_records=1000
        )
    assert sorted(numbers_of(stored)) == sorted(acked) == list(range(100))
    assert sorted(numbers_of(committed) + numbers_of(resumed)) == sorted(acked)  # no gaps
    # read again after the restart: only what was read past the commit
    assert Counter(numbers_of(resumed)) == Counter(numbers_of(past_commit) + list(range(50, 100)))


async def test_a_killed_members_partitions_move_to_the_survivor_within_its_session_timeout(
    tansu_server: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    topic, group = unique("clicks"), unique("sessions")
    url = f"kafka://{tansu_server}"
    marker = tmp_path / "member.json"
    async with open_broker(url) as broker:
        await broker.create_topic(TopicSpec(topic, 4))
        survivor = broker.open_group([topic], group, session_timeout=SESSION_TIMEOUT_S)
        async with survivor:
            member = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.backends.kafka_member",
                url, topic, group, str(SESSION_TIMEOUT_S), str(marker),
                start_new_session=True,
            )  # fmt: skip
            try:
                async with asyncio.timeout(JOIN_TIMEOUT_S):
                    while not (marker.exists() and json.loads(marker.read_text())):
                        await survivor.poll(timeout=0.2)
                    while len(survivor.assignment()) != 2:
                        await survivor.poll(timeout=0.2)
                os.killpg(member.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                async with asyncio.timeout(3 * SESSION_TIMEOUT_S + JOIN_TIMEOUT_S):
                    while len(survivor.assignment()) != 4:
                        await survivor.poll(timeout=0.2)
                moved_after = time.monotonic() - killed_at
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(member.pid, signal.SIGKILL)
                await member.wait()
    assert member.returncode == -signal.SIGKILL
    assert moved_after < 3 * SESSION_TIMEOUT_S, f"moved {moved_after:.1f} s after the kill"
