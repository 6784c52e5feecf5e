"""One consumer-group member in a process of its own: ``python -m tests.reliability.stream_member``.

    python -m tests.reliability.stream_member URL GROUP OUTFILE --topic T [options]

A StreamConsumer (``auto_offset_reset="earliest"``, no auto-commit) that commits after
processing: it polls up to ``--batch`` records, appends one JSON line per record to OUTFILE
and fsyncs it, and only then commits the offsets it processed. Everything it does goes to
OUTFILE as JSON lines, each written by a single ``write`` call on an O_APPEND descriptor,
so a SIGKILL can cut no line but the one being written, and the parent can read the file
while the member runs:

* ``{"event": "joined", "member": ID, ...}`` once it is in the group;
* ``{"event": "owns", "member": ID, "partitions": [...], "t": T}`` whenever the set of
  partitions it reads changes, after a poll;
* ``{"event": "record", "partition": P, "offset": O, "key": K, "n": N, "pid": PID, "t": T}``
  for each record processed (the value is JSON ``{"key": K, "n": N}``);
* ``{"event": "commit", "offsets": {P: NEXT_OFFSET}, "t": T}`` after each accepted commit,
  and ``{"event": "fenced", ...}`` when the group refuses one (those records are committed
  by the next accepted commit, or before the partitions are handed over);
* ``{"event": "holding", ...}`` when it stops between processing a batch and committing
  it because ``--hold-file`` exists (it then waits there, silent, to be killed);
* ``{"event": "closed", ...}`` after a clean close on SIGTERM or SIGINT, which commits and
  leaves the group.

It starts reading only once ``--go-file`` exists (after joining), so that members started
one after another begin together; it does not heartbeat while it waits, so the parent must
create the file within the session timeout. Times are ``time.time()``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from conveyor.app import App
from conveyor.assignors import TopicPartition
from conveyor.brokers.stream_types import Record
from conveyor.errors import MemberFenced
from conveyor.events.consumer import StreamConsumer


class Log:
    """Appends whole JSON lines to a file, one ``write`` call per call of ``write``."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, *events: dict[str, Any], sync: bool = False) -> None:
        data = "".join(json.dumps(event, separators=(",", ":")) + "\n" for event in events)
        view = memoryview(data.encode())
        while view:
            view = view[os.write(self.fd, view) :]
        if sync:
            os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def partitions_of(consumer: StreamConsumer) -> list[int]:
    return sorted(tp.partition for tp in consumer.assignment())


def member_of(consumer: StreamConsumer) -> str | None:
    return consumer.membership.member_id if consumer.membership else None


async def wait_for(path: Path, stopping: asyncio.Event) -> None:
    while not await asyncio.to_thread(path.exists) and not stopping.is_set():
        await asyncio.sleep(0.01)


async def run(arguments: argparse.Namespace) -> int:
    log = Log(Path(arguments.outfile))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    pid = os.getpid()
    hold_file = Path(arguments.hold_file) if arguments.hold_file else None
    app = App(arguments.url)
    consumer: StreamConsumer | None = None

    async def commit_processed(revoked: list[TopicPartition]) -> None:
        # Called before partitions move to another member: every record polled so far has
        # been processed (the poll loop commits before polling again), so commit them all.
        assert consumer is not None
        await commit(consumer)

    async def commit(consumer: StreamConsumer) -> None:
        offsets = {tp: consumer.position(tp) for tp in consumer.assignment()}
        await consumer.commit(offsets)
        log.write(
            {
                "event": "commit",
                "member": member_of(consumer),
                "offsets": {str(tp.partition): offset for tp, offset in offsets.items()},
                "t": time.time(),
            }
        )

    try:
        consumer = await app.aconsumer(
            arguments.topic,
            group=arguments.group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout=arguments.session_timeout,
            heartbeat_interval=arguments.heartbeat_interval,
            on_revoke=commit_processed,
        )
        await consumer.start()
        log.write({"event": "joined", "member": member_of(consumer), "pid": pid, "t": time.time()})
        if arguments.go_file:
            await wait_for(Path(arguments.go_file), stopping)
        owned: list[int] | None = None
        while not stopping.is_set():
            records = await consumer.poll(timeout=0.1, max_records=arguments.batch)
            now = time.time()
            if partitions_of(consumer) != owned:
                owned = partitions_of(consumer)
                log.write(
                    {"event": "owns", "member": member_of(consumer), "partitions": owned, "t": now}
                )
            if not records:
                continue
            log.write(*(processed(record, pid, now) for record in records), sync=True)
            if hold_file is not None and await asyncio.to_thread(hold_file.exists):
                log.write({"event": "holding", "t": time.time()})
                await asyncio.Event().wait()  # processed, not committed: the parent kills us
            try:
                await commit(consumer)
            except MemberFenced as error:
                log.write({"event": "fenced", "error": str(error), "t": time.time()})
            await asyncio.sleep(arguments.pause)
    finally:
        if consumer is not None:
            await consumer.close()
        await app.aclose()
    log.write({"event": "closed", "t": time.time()})
    log.close()
    return 0


def processed(record: Record, pid: int, now: float) -> dict[str, Any]:
    """The line for one record: where it was, what it said, who processed it and when."""
    value = json.loads(record.value or b"")
    key = (record.key or b"").decode()
    assert value["key"] == key, f"record {record.partition}:{record.offset} has key {key!r}"
    return {
        "event": "record",
        "partition": record.partition,
        "offset": record.offset,
        "key": key,
        "n": value["n"],
        "pid": pid,
        "t": now,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.stream_member")
    parser.add_argument("url")
    parser.add_argument("group")
    parser.add_argument("outfile")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.005)
    parser.add_argument("--session-timeout", type=float, default=2.0)
    parser.add_argument("--heartbeat-interval", type=float, default=0.3)
    parser.add_argument("--go-file", default="")
    parser.add_argument("--hold-file", default="")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
