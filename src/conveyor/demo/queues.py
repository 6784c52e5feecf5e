"""The first demo: one producer and two consumer processes sharing one SQLite file.

``python -m conveyor.demo.queues`` publishes messages from one process while two
others consume them. One consumer quits partway holding a few leased, unacked messages, as a
crashed worker would: once their short lease lapses, the other consumer gets them again.
Nothing is lost and, because every lease that held was acked, nothing is consumed twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from conveyor import Message, QueueSpec, open_broker
from conveyor.errors import ConveyorError

QUEUE = "conveyor-demo"
LEASE = 1.0  # seconds before the quitting consumer's messages go to the other one
ABANDONED = 5  # messages the quitting consumer leaves unacked
TIME_LIMIT = 25.0  # seconds; no process of the demo runs longer

Report = dict[str, Any]


async def prepare(url: str) -> None:
    async with open_broker(url) as broker:
        if QUEUE in [spec.name for spec in await broker.list_queues()]:
            await broker.delete_queue(QUEUE)  # a --db from an earlier run starts clean
        await broker.declare_queue(QueueSpec(QUEUE))


async def produce(url: str, count: int, batch: int = 100) -> Report:
    async with open_broker(url) as broker:
        started = time.time()
        for first in range(0, count, batch):
            ids = range(first, min(first + batch, count))
            await broker.publish_batch([Message(str(i).encode(), routing_key=QUEUE) for i in ids])
        return {"published": count, "started": started, "finished": time.time()}


async def consume(url: str, expected: int, quit_after: int | None, ready: Path | None) -> Report:
    """Receive and ack until all ``expected`` messages are acked by someone.

    With ``quit_after``, quit after that many acks (or sooner, once the producer is done)
    leasing ABANDONED more messages that are never acked, as a crashing worker would.
    """
    acked: list[int] = []
    latencies: list[float] = []
    report: Report = {"acked": acked, "latencies": latencies, "redelivered": 0}
    report["last_first_ack"] = 0.0  # when this consumer last acked a first delivery
    give_up = time.monotonic() + TIME_LIMIT
    async with open_broker(url) as broker:
        if ready is not None:
            await asyncio.to_thread(ready.touch)  # tell the parent we listen
        while time.monotonic() < give_up:
            if quit_after is not None and len(acked) >= quit_after:
                held = await broker.receive(
                    QUEUE, max_messages=ABANDONED, lease_timeout=LEASE, wait=1.0
                )
                report["abandoned"] = [int(d.message.body) for d in held]
                break
            deliveries = await broker.receive(QUEUE, max_messages=100, wait=0.2)
            received = time.time()
            if quit_after is not None or not deliveries:
                stats = await broker.queue_stats(QUEUE)
                if (stats.published or 0) >= expected:  # the producer is done
                    if not deliveries and stats.depth == 0:
                        break
                    quit_after = None if quit_after is None else 0  # quit while work is left
            if not deliveries:
                continue
            await broker.ack_many(deliveries)
            for delivery in deliveries:
                acked.append(int(delivery.message.body))
                latencies.append(received - delivery.message.timestamp)
                if delivery.redelivered:
                    report["redelivered"] += 1
                else:
                    report["last_first_ack"] = time.time()
    return report


def spawn(db: Path, role: str, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "conveyor.demo.queues", "--role", role, "--db", str(db), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def collect(procs: dict[str, subprocess.Popen[str]]) -> dict[str, Report]:
    """Each child's report (its one line of JSON output); kills them all if one fails."""
    deadline = time.monotonic() + TIME_LIMIT + 2
    reports = {}
    try:
        for name, proc in procs.items():
            output, _ = proc.communicate(timeout=max(deadline - time.monotonic(), 0.1))
            if proc.returncode != 0:
                raise SystemExit(f"demo: the {name} process failed (exit {proc.returncode})")
            reports[name] = json.loads(output)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return reports


def run(db: Path, count: int, workdir: Path) -> int:
    url = f"sqlite:///{db}"
    asyncio.run(prepare(url))
    ready = [workdir / "consumer-1.ready", workdir / "consumer-2.ready"]
    quit_after = ["--quit-after", str(max(count // 10, 1))]
    procs = {
        "consumer-1": spawn(db, "consumer", "--messages", str(count), "--ready", str(ready[0])),
        "consumer-2": spawn(
            db, "consumer", "--messages", str(count), "--ready", str(ready[1]), *quit_after
        ),
    }
    deadline = time.monotonic() + 10
    while not all(file.exists() for file in ready) and time.monotonic() < deadline:
        time.sleep(0.01)  # start producing once both consumers are listening
    procs["producer"] = spawn(db, "producer", "--messages", str(count))
    reports = collect(procs)
    depth = asyncio.run(queue_depth(url))
    print(f"Conveyor demo: 1 producer and 2 consumer processes sharing {db}")
    return summarize(count, reports.pop("producer"), reports, depth)


def summarize(count: int, producer: Report, consumers: dict[str, Report], depth: int) -> int:
    """Print what happened; 1 unless every message was consumed and the queue is empty."""
    acked = [i for report in consumers.values() for i in report["acked"]]
    unique = set(acked)
    latencies = [s for report in consumers.values() for s in report["latencies"]]
    started = producer["started"]
    publishing = producer["finished"] - started
    consuming = max(report["last_first_ack"] for report in consumers.values()) - started
    rate = f"{count / publishing:,.0f} msg/s"
    print(f"  published   {count:>7} messages in {publishing:.2f} s ({rate})")
    for name, report in consumers.items():
        again = f", {report['redelivered']} of them redeliveries" if report["redelivered"] else ""
        print(f"  {name:<11} {len(report['acked']):>7} acked{again}")
        if "abandoned" in report:
            held = len(report["abandoned"])
            print(f"  {name:<11} then quit holding {held} unacked messages (lease {LEASE:g} s)")
    redelivered = sum(report["redelivered"] for report in consumers.values())
    print(f"  redelivered {redelivered:>7} once their lease lapsed")
    once = "each exactly once" if len(acked) == len(unique) else f"{len(acked)} acks in all"
    print(f"  consumed    {len(unique):>7} of {count} messages, {once}")
    print(f"  rate        {count / consuming:>7,.0f} msg/s, first publish to last first-time ack")
    print(f"  latency p50 {statistics.median(latencies) * 1000:>7.1f} ms, publish to receive")
    print(f"  queue depth {depth:>7}")
    if unique != set(range(count)) or depth:
        print("demo: FAILED, messages are missing or left in the queue", file=sys.stderr)
        return 1
    return 0


async def queue_depth(url: str) -> int:
    async with open_broker(url) as broker:
        return (await broker.queue_stats(QUEUE)).at_least


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conveyor.demo.queues", description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000, help="how many to publish")
    parser.add_argument("--db", type=Path, help="database file (default: a temporary one)")
    parser.add_argument("--role", choices=["main", "producer", "consumer"], default="main")
    parser.add_argument("--quit-after", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ready", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.messages < 1:
        parser.error("--messages must be at least 1")
    if args.role == "producer":
        print(json.dumps(asyncio.run(produce(f"sqlite:///{args.db}", args.messages))))
        return 0
    if args.role == "consumer":
        url = f"sqlite:///{args.db}"
        print(json.dumps(asyncio.run(consume(url, args.messages, args.quit_after, args.ready))))
        return 0
    with tempfile.TemporaryDirectory(prefix="conveyor-demo-") as tmp:
        db = args.db.resolve() if args.db is not None else Path(tmp) / "demo.db"
        try:
            return run(db, args.messages, Path(tmp))
        except ConveyorError as error:
            parser.exit(2, f"demo: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
