"""The newsletter campaign: ``make demo`` (``python -m conveyor.demo``).

It starts, on one embedded broker file:
- a real SMTP server on loopback that greylists some recipients (451) and bounces invalid ones
  (550);
- an autoscaled pool of worker processes (``conveyor worker --autoscale``);
- the HTTP API and console, with ``POST /send-newsletter`` added.

Then it posts the campaign: 10,000 emails are queued in one call that answers in well under a
second. Workers retry the greylisted ones with backoff and dead-letter the bounces. It runs
until Ctrl-C; ``--once`` waits until every email is settled, prints a summary and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from conveyor.demo import newsletter
from conveyor.demo.smtp import MailServer
from conveyor.demo.web import http_server
from conveyor.tasks.states import dead_letter_queue

WORKERS = "1:3"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def start_workers(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "conveyor", "worker", "conveyor.demo.newsletter:app",
        "--autoscale", WORKERS, "--scale-at", "50:2000", "--concurrency", "16",
        "--scale-interval", "1", "--scale-cooldown", "2",
        env=env, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


def post_campaign(port: int, token: str, emails: int) -> tuple[dict[str, object], float]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/send-newsletter",
        data=json.dumps({"emails": emails}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    return answer, time.perf_counter() - started


async def settled(emails: int, timeout: float) -> dict[str, int]:
    """Wait until every email succeeded or was dead-lettered; the counts."""
    broker = await newsletter.app.abroker()
    deadline = time.monotonic() + timeout
    while True:
        queue = await broker.queue_stats(newsletter.QUEUE)
        dead = (await broker.queue_stats(dead_letter_queue(newsletter.QUEUE))).at_least
        if queue.depth == 0 and queue.unacked == 0:
            return {"dead": dead}
        if time.monotonic() > deadline:
            raise TimeoutError(f"{queue.depth} emails still queued after {timeout:.0f} s")
        await asyncio.sleep(0.25)


async def campaign(args: argparse.Namespace, workdir: Path) -> int:
    mail = MailServer(free_port())
    mail.start()
    url = f"sqlite:///{workdir / 'demo.db'}"
    env = {**os.environ, newsletter.URL_ENV: url, newsletter.SMTP_ENV: f"127.0.0.1:{mail.port}"}
    os.environ.update(env)
    newsletter.app.broker_url = url
    port = args.port or free_port()
    token = secrets.token_urlsafe(16)
    http = http_server(newsletter.app, port, token)
    server = asyncio.create_task(http.serve())
    workers = await start_workers(env)
    try:
        await wait_listening(port)
        print(f"console: http://127.0.0.1:{port}/   token: {token}   (API docs at /docs)")
        started = time.perf_counter()
        answer, took = await asyncio.to_thread(post_campaign, port, token, args.emails)
        print(f"POST /send-newsletter queued {answer['queued']:,} emails in {took * 1000:.0f} ms")
        if not args.once:
            print("sending... Ctrl-C to stop")
            await asyncio.Event().wait()
        counts = await settled(args.emails, timeout=args.timeout)
        elapsed = time.perf_counter() - started
        print_summary(args.emails, mail, counts["dead"], elapsed)
        return 0 if mail.counts.delivered + counts["dead"] == args.emails else 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            workers.send_signal(signal.SIGTERM)
        await workers.wait()
        http.should_exit = True
        await server
        await newsletter.app.aclose()
        mail.stop()


async def wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def print_summary(emails: int, mail: MailServer, dead: int, elapsed: float) -> None:
    counts = mail.counts
    print("summary")
    print(f"  sent            {counts.delivered:>7,}")
    print(f"  retried         {counts.temporary_failures:>7,}   (greylisted, then delivered)")
    print(f"  dead-lettered   {dead:>7,}   (bounced: invalid addresses)")
    print(f"  of              {emails:>7,} emails in {elapsed:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conveyor.demo", description=__doc__)
    parser.add_argument("--emails", type=int, default=10_000, help="size of the campaign")
    parser.add_argument("--once", action="store_true", help="drain, print a summary, exit")
    parser.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    parser.add_argument("--timeout", type=float, default=300.0, help="--once gives up after")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="conveyor-demo-") as tmp:
        try:
            return asyncio.run(campaign(args, Path(tmp)))
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
