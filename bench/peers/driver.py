"""One peer run, in its own process: ``python -m bench.peers NAME COUNT WORKDIR``.

1. Enqueue the begin marker (untimed: it also opens the connections), then COUNT no-op
   tasks one call each (timed: ``enqueue_per_s``), then the end marker.
2. Start the peer's worker processes (their own CLI, a new process group each, logs in
   WORKDIR) on the full queue.
3. Every 10 ms: done once the end marker has run and the library reports nothing left
   (where it can tell). ``e2e_per_s`` = COUNT / (done - the begin marker's run time), so
   interpreter and library start-up are left out for every library alike; ``startup_s``
   is the time from starting the workers to the begin marker.
4. Always stop the workers (SIGTERM to their process groups, or the client's
   ``STOP_SIGNAL``; SIGKILL after a grace) and delete the run's queues and keys.

The last line of stdout is the JSON of the figures.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from bench.harness import DRAIN_POLL_S, ROOT
from bench.peers import BACKEND_ENV, TOKEN_ENV, Client, peer_named

STOP_GRACE_S = 15.0


def main(argv: Sequence[str]) -> int:
    match list(argv):
        case [name, count, workdir]:
            figures = run_peer(name, int(count), Path(workdir))
        case _:
            print("usage: python -m bench.peers NAME COUNT WORKDIR", file=sys.stderr)
            return 2
    print(json.dumps(figures), flush=True)
    return 0


def run_peer(name: str, count: int, workdir: Path) -> dict[str, float]:
    peer = peer_named(name)
    token = secrets.token_hex(4)
    os.environ[TOKEN_ENV] = token
    os.environ[BACKEND_ENV] = peer.backend
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    module = importlib.import_module(peer.module)
    client = cast(Client, module.Client())
    workdir.mkdir(parents=True, exist_ok=True)
    begin, end = workdir / f"{name}-{token}.begin", workdir / f"{name}-{token}.end"
    workers: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        client.send_marker(str(begin))
        enqueue_seconds = client.enqueue(count)
        client.send_marker(str(end))
        launched = time.time()
        for number, command in enumerate(client.worker_commands()):
            logs.append(workdir / f"{name}-{token}-worker{number}.log")
            workers.append(start_worker(command, logs[-1]))
        done = wait_done(client, workers, end, timeout=120 + count / 50)
        began = float(begin.read_text())
    except BaseException:
        stop_workers(workers, signal.SIGKILL)
        print_logs(logs)
        raise
    finally:
        stop_workers(workers, getattr(client, "STOP_SIGNAL", signal.SIGTERM))
        client.cleanup()
    return {
        "enqueue_per_s": count / max(enqueue_seconds, 1e-9),
        "e2e_per_s": count / max(done - began, 1e-9),
        "startup_s": began - launched,
    }


def start_worker(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop_workers gets them all
            preexec_fn=_die_with_parent,
        )


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if this driver dies (Linux prctl)."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def wait_done(
    client: Client, workers: list[subprocess.Popen[bytes]], end: Path, timeout: float
) -> float:
    """Poll until the end marker ran and nothing is left; the time.time() it was seen."""
    deadline = time.monotonic() + timeout
    while True:
        for worker in workers:
            if worker.poll() is not None:
                raise RuntimeError(f"a worker exited with {worker.returncode}: {worker.args!r}")
        if end.exists() and not client.depth():
            return time.time()
        if time.monotonic() > deadline:
            raise RuntimeError(f"not drained within {timeout:.0f} s (depth {client.depth()})")
        time.sleep(DRAIN_POLL_S)


def stop_workers(workers: list[subprocess.Popen[bytes]], signum: int = signal.SIGTERM) -> None:
    """Signal each worker's process group, wait, then SIGKILL whatever is left of it."""
    for worker in workers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signum)
    deadline = time.monotonic() + STOP_GRACE_S
    for worker in workers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(max(deadline - time.monotonic(), 0.1))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def print_logs(logs: list[Path], lines: int = 30) -> None:
    """The last lines of each worker's log, on stderr, when a run failed."""
    for log in logs:
        try:
            tail = log.read_bytes().splitlines()[-lines:]
        except OSError:
            continue
        print(f"--- {log.name}", file=sys.stderr)
        print(b"\n".join(tail).decode(errors="replace"), file=sys.stderr)
