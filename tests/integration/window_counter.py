"""Clicks per page per minute in a WindowStore: ``python -m tests.integration.window_counter``.

    python -m tests.integration.window_counter URL GROUP OUTPUT STATUS [options]

Reads the ``clicks`` topic (values ``{"page": P, "amount": A}``) as a member of GROUP,
counts and sums each page's clicks per minute of event time, and sends every window it
closes to the OUTPUT topic as ``{"key", "start", "end", "count", "total"}``. After each
batch it replaces the STATUS file (written whole, by a rename) with its pid, the batches
it read, and its operator's ``late`` and ``skipped`` counts.

``--hold-after N`` stops it after its Nth batch with records, once that batch's windows
are sent: before the commit (``--hold-at processed``), or once the snapshots are written
but the offsets are not (``--hold-at saved``). It then writes STATUS with ``"holding":
true`` and waits to be killed. ``--replay`` seeks every partition back to the beginning
after its first batch with records.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from conveyor.app import App
from conveyor.events.producer import record
from conveyor.events.window_store import WindowStore
from conveyor.events.windows import TumblingWindows, WindowResult
from tests.backends.processes import write_json

TOPIC = "clicks"
SIZE = 60.0


def reported(result: WindowResult) -> dict[str, object]:
    return {
        "key": result.key,
        "start": result.start,
        "end": result.end,
        "count": result.count,
        "total": result.total,
    }


async def run(arguments: argparse.Namespace) -> None:
    status = Path(arguments.status)
    app = App(arguments.url)
    broker = await app.abroker()
    producer = await app.aproducer()
    windows = TumblingWindows(SIZE)
    store = WindowStore(broker, windows, group=arguments.group, name="per-page")
    consumer = store.open_consumer(
        [TOPIC], auto_offset_reset="earliest", session_timeout=3.0, heartbeat_interval=0.3
    )
    batches, replayed = 0, False
    async with consumer:
        async for batch in store.batches(timeout=0.1, max_records=arguments.batch):
            closed = batch.closed
            for click in batch.records:
                body = click.json()
                closed += windows.add(
                    body["page"],
                    click.timestamp,
                    body["amount"],
                    partition=click.topic_partition,
                    offset=click.offset,
                )
            if closed:
                await producer.send_batch(arguments.output, [record(reported(r)) for r in closed])
            batches += bool(batch.records)
            holding = bool(batch.records) and batches == arguments.hold_after
            if holding and arguments.hold_at == "saved":
                await store.save()
            write_json(
                status,
                {
                    "pid": os.getpid(),
                    "batches": batches,
                    "late": windows.late,
                    "skipped": windows.skipped,
                    "holding": holding,
                },
            )
            if holding:
                await asyncio.Event().wait()  # the parent kills us here
            if arguments.replay and batch.records and not replayed:
                await consumer.seek_to_beginning()
                replayed = True


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.integration.window_counter")
    parser.add_argument("url")
    parser.add_argument("group")
    parser.add_argument("output")
    parser.add_argument("status")
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--hold-after", type=int, default=0)
    parser.add_argument("--hold-at", choices=["processed", "saved"], default="processed")
    parser.add_argument("--replay", action="store_true")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
