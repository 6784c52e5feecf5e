"""Child-process roles for the multi-process tests: ``python -m tests.backends.processes ROLE``.

Each role opens its own broker on the shared SQLite file and reports what it did through
files the parent test reads, so the parent sees exactly what each process saw. Files that
the parent polls for are written to a temporary name and renamed, so they appear whole.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
import typing
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from conveyor import App, Message, open_broker


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` so that ``path`` appears complete or not at all."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value))
    os.replace(partial, path)


async def produce(url: str, queue: str, count: int, batch: int) -> None:
    """Publish ``count`` messages whose bodies are the ids 0..count-1."""
    async with open_broker(url) as broker:
        for start in range(0, count, batch):
            ids = range(start, min(start + batch, count))
            await broker.publish_batch([Message(str(i).encode(), routing_key=queue) for i in ids])


async def consume(
    url: str, queue: str, acked_file: Path, ready_file: Path, done_file: Path
) -> None:
    """Receive and ack until ``done_file`` exists and the queue has nothing left to give.

    Appends the id of every message it acked to ``acked_file``, one per line.
    """
    async with open_broker(url) as broker:
        write_json(ready_file, os.getpid())
        with acked_file.open("a") as out:
            while True:
                # checked before the receive whose empty answer then ends the loop
                producer_done = await asyncio.to_thread(done_file.exists)
                deliveries = await broker.receive(queue, max_messages=100, wait=0.5)
                if not deliveries:
                    if producer_done:
                        return
                    continue
                await broker.ack_many(deliveries)
                out.write("".join(f"{d.message.body.decode()}\n" for d in deliveries))
                out.flush()


async def hold(url: str, queue: str, count: int, lease: float, report: Path) -> None:
    """Lease ``count`` messages, report them, then hang without acking until killed."""
    async with open_broker(url) as broker:
        deliveries = await broker.receive(queue, max_messages=count, lease_timeout=lease)
        write_json(
            report,
            [
                {
                    "id": d.message.body.decode(),
                    "delivery_count": d.delivery_count,
                    "lease_deadline": d.lease_deadline,
                }
                for d in deliveries
            ],
        )
        await asyncio.Event().wait()  # forever: the test kills this process


async def drain(url: str, queue: str, expected: int, linger: float, report: Path) -> None:
    """Receive and ack until ``expected`` deliveries arrived, then keep receiving ``linger``
    seconds more so that any duplicate would show; report every delivery."""
    seen: list[dict[str, Any]] = []
    give_up = time.monotonic() + 20
    async with open_broker(url) as broker:
        stop = None
        while time.monotonic() < give_up and (stop is None or time.monotonic() < stop):
            deliveries = await broker.receive(queue, max_messages=100, wait=0.2)
            received_at = time.time()
            if deliveries:
                await broker.ack_many(deliveries)
            seen.extend(
                {
                    "id": d.message.body.decode(),
                    "delivery_count": d.delivery_count,
                    "redelivered": d.redelivered,
                    "received_at": received_at,
                }
                for d in deliveries
            )
            if stop is None and len(seen) >= expected:
                stop = time.monotonic() + linger
    write_json(report, seen)


async def wait_one(url: str, queue: str, wait: float, ready_file: Path, report: Path) -> None:
    """Wait in one receive(wait=...) and report how long after its publish the message came."""
    async with open_broker(url) as broker:
        await broker.ping()
        write_json(ready_file, os.getpid())
        started = time.monotonic()
        deliveries = await broker.receive(queue, wait=wait)
        arrived = time.time()
        waited = time.monotonic() - started
        if deliveries:
            await broker.ack_many(deliveries)
        write_json(
            report,
            {
                "received": len(deliveries),
                "waited": waited,
                "latency": arrived - deliveries[0].message.timestamp if deliveries else None,
            },
        )


async def send_and_die(url: str, count: int) -> None:
    """Send ``count`` jobs the way a short script does (sync calls, never closing the App),
    then die by SIGKILL: nothing of the App's own shutdown runs."""
    app = App(url)
    task = app.task(name="noop")(_noop)
    for _ in range(20):
        task.delay()
    task.send_many([((), {})] * (count - 20))
    os.kill(os.getpid(), signal.SIGKILL)


def _noop() -> None:
    return None


ROLES: dict[str, Callable[..., Coroutine[Any, Any, None]]] = {
    "produce": produce,
    "consume": consume,
    "hold": hold,
    "drain": drain,
    "wait-one": wait_one,
    "send-and-die": send_and_die,
}


def main() -> None:
    """Parse ``ROLE ARGS...``, one positional argument per parameter of the role."""
    parser = argparse.ArgumentParser(prog="python -m tests.backends.processes")
    roles = parser.add_subparsers(dest="role", required=True)
    for name, role in ROLES.items():
        sub = roles.add_parser(name)
        for param, kind in typing.get_type_hints(role).items():
            if param != "return":
                sub.add_argument(param, type=kind)
    args = vars(parser.parse_args())
    asyncio.run(ROLES[args.pop("role")](**args))


if __name__ == "__main__":
    main()
