"""The ``http`` suite: ``conveyor serve`` under load on loopback.

Each run starts a real server as a child process by its own CLI, ``python -m conveyor serve
bench.http_app:app --host 127.0.0.1 --port N --token-file F --log-level warning``, on a fresh
SQLite file (durability normal) in a temporary directory, with a random token. No worker
runs, so the enqueued jobs stay queued. The load comes from this process with
``httpx.AsyncClient`` over keep-alive connections; the server and the bench share the
machine's cores, and the figures say how much CPU each took, and how much other processes
took meanwhile.

- Open loop (the target): ``POST /api/jobs`` at a fixed rate. Request ``i`` is due at
  ``start + i / rate`` whether or not earlier ones have answered, and its latency runs from
  that due time to its response, so time spent waiting for a connection, for the client's
  event loop or in the server's backlog all counts (no coordinated omission).
- Closed loop: clients posting as fast as the server answers: the most it takes.
- Reads: the console's overview page ``/`` after logging in, or ``GET /api/queues`` while
  the server has no console (it answers ``/`` with 404).

Any answer but the expected status (202 for an enqueue, 200 for a read), or a request that
fails, fails the run. The server is stopped with SIGTERM at the end and awaited.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import http_app
from bench.harness import (
    ROOT,
    Figures,
    Stopwatch,
    Suite,
    Target,
    bench_module_command,
    per_second,
    percentile,
    progress,
    terminating,
    units_of,
)
from bench.tasks import peak_rss_mb

RATE = 1_000
"""Requests per second of the open loop."""
CONNECTIONS = 32
"""Keep-alive connections of the open loop (each one AsyncClient with a pool of one)."""
CLOSED_CLIENTS = 16
"""Concurrent clients of the closed loops (enqueue as fast as possible, and reads)."""
WARMUP_REQUESTS = 4 * CONNECTIONS
"""Enqueues before the timed parts, CONNECTIONS at a time: every connection is opened."""
REQUEST_TIMEOUT_S = 10.0
START_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0
OPEN_LOOP_SLACK_S = 60.0
"""How long the open loop may overrun its schedule before the run fails."""
NOISY_CORES = 0.25
"""Other processes' CPU during the open loop above which the run says it was contended."""
LEAD_S = 0.050
"""The first open-loop request is due this long after the schedule is drawn up."""

ENQUEUE_PATH = "/api/jobs"
ENQUEUE_BODY = (
    b'{"task": "' + http_app.NOOP.encode() + b'", "args": [], "kwargs": {}}'
)  # encoded once: the client's JSON encoding is not the server's cost
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class Sizes:
    """Seconds of each part."""

    open_s: float
    closed_s: float
    read_s: float


FULL = Sizes(open_s=10.0, closed_s=5.0, read_s=5.0)
QUICK = Sizes(open_s=3.0, closed_s=2.0, read_s=2.0)


@dataclass(frozen=True, slots=True)
class ReadTarget:
    """What the read figure measures: a path, under which name, and whether it needs a
    console session."""

    figure: str
    path: str
    login: bool


CONSOLE = ReadTarget("console_rps", "/", login=True)
API_LIST = ReadTarget("api_list_rps", "/api/queues", login=False)


def read_target(overview_status: int) -> ReadTarget:
    """The console's overview when the server has one (``/`` answers anything but 404: a
    redirect to the login page, or the page), else the API's queue list."""
    return API_LIST if overview_status == 404 else CONSOLE


# name -> (unit, what it measures); the order is the order of the printed table
FIGURES: dict[str, tuple[str, str]] = {
    "enqueue_rps": (
        "req/s",
        f"POST {ENQUEUE_PATH} open loop at {RATE:,}/s: answered / (last answer - first due)",
    ),
    "enqueue_p50_ms": ("ms", "open loop: due time -> response, median"),
    "enqueue_p99_ms": ("ms", "open loop: due time -> response, 99th percentile"),
    "enqueue_max_ms": ("ms", "open loop: due time -> response, the slowest"),
    "enqueue_send_lag_p99_ms": (
        "ms",
        "open loop: due time -> a connection starts sending it (timer lateness and waiting "
        "for a free connection), 99th percentile",
    ),
    "enqueue_server_cpu_ms": ("ms", "open loop: the server's CPU time per request"),
    "enqueue_client_cpu_ms": ("ms", "open loop: the bench process's CPU time per request"),
    "enqueue_others_cpu": (
        "cores",
        "open loop: CPU time of every other process on the machine per second (noise)",
    ),
    "enqueue_max_rps": ("req/s", f"POST {ENQUEUE_PATH} closed loop, {CLOSED_CLIENTS} clients"),
    CONSOLE.figure: ("req/s", f"GET {CONSOLE.path} (console overview), {CLOSED_CLIENTS} clients"),
    API_LIST.figure: ("req/s", f"GET {API_LIST.path}, {CLOSED_CLIENTS} clients"),
    "server_rss_mb": ("MB", "peak RSS (VmHWM) of the server process"),
}
RATIOS: dict[str, tuple[str, str]] = {
    "enqueue_max_vs_rate": ("x", f"enqueue_max_rps / {RATE:,}: headroom over the open loop"),
}

TARGETS = (
    Target(f"enqueue p99 <= 20 ms at {RATE:,} req/s", "enqueue_p99_ms", "<=", 20.0),
    Target(f"... while achieving >= 95% of {RATE:,} req/s", "enqueue_rps", ">=", 0.95 * RATE),
)


def ratios(results: Mapping[str, float]) -> Figures:
    if "enqueue_max_rps" not in results:
        return {}
    return {"enqueue_max_vs_rate": results["enqueue_max_rps"] / RATE}


# pure helpers


def due_times(start: float, rate: float, count: int) -> list[float]:
    """The open loop's schedule: request ``i`` is due at ``start + i / rate``."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, not {rate}")
    return [start + number / rate for number in range(count)]


@dataclass(frozen=True, slots=True)
class OpenLoop:
    """What the open loop saw, in seconds (``perf_counter``)."""

    due: Sequence[float]
    started: Sequence[float]
    answered: Sequence[float]
    errors: Mapping[str, int]

    def figures(self) -> Figures:
        if not self.due:
            raise ValueError("the open loop sent nothing")
        latencies = [(done - due) * 1000 for due, done in zip(self.due, self.answered, strict=True)]
        lags = [(sent - due) * 1000 for due, sent in zip(self.due, self.started, strict=True)]
        return {
            "enqueue_rps": per_second(len(self.due), max(self.answered) - self.due[0]),
            "enqueue_p50_ms": percentile(latencies, 50),
            "enqueue_p99_ms": percentile(latencies, 99),
            "enqueue_max_ms": max(latencies),
            "enqueue_send_lag_p99_ms": percentile(lags, 99),
        }


def check_errors(errors: Mapping[str, int], total: int, what: str) -> None:
    """Raise RuntimeError naming each kind of failure when any request failed."""
    failed = sum(errors.values())
    if failed:
        kinds = ", ".join(f"{count} x {kind}" for kind, count in sorted(errors.items()))
        raise RuntimeError(f"{failed} of {total} {what} requests failed: {kinds}")


CSRF_INPUT = re.compile(r"""<input\b[^>]*\bname=["']csrf["'][^>]*>""", re.IGNORECASE)
VALUE_ATTRIBUTE = re.compile(r"""\bvalue=["']([^"']*)["']""")


def login_csrf(page: str) -> str:
    """The CSRF value of the login form's hidden ``csrf`` field."""
    field = CSRF_INPUT.search(page)
    value = VALUE_ATTRIBUTE.search(field.group(0)) if field else None
    if value is None or not value.group(1):
        raise RuntimeError("the login page has no csrf field")
    return value.group(1)


def cpu_seconds(stat: str, ticks_per_second: int) -> float:
    """User + system CPU seconds of a process from its /proc/PID/stat line."""
    # the command name (field 2) is in parentheses and may hold spaces: split after it
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of the line
    return (utime + stime) / ticks_per_second


def process_cpu(pid: int) -> float:
    """CPU seconds process ``pid`` has used so far (Linux)."""
    return cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), os.sysconf("SC_CLK_TCK"))


def busy_seconds(stat: str, ticks_per_second: int) -> float:
    """CPU seconds the whole machine has been busy, from the ``cpu`` line of /proc/stat:
    user, nice, system, irq, softirq and steal (idle and iowait left out)."""
    for line in stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
            return (user + nice + system + irq + softirq + steal) / ticks_per_second
    raise ValueError("no cpu line in /proc/stat")


def machine_busy() -> float:
    return busy_seconds(Path("/proc/stat").read_text(), os.sysconf("SC_CLK_TCK"))


def server_command(port: int, token_file: Path) -> list[str]:
    return bench_module_command(
        "conveyor", "serve", "bench.http_app:app",
        "--host", "127.0.0.1", "--port", str(port),
        "--token-file", str(token_file), "--log-level", "warning",
    )  # fmt: skip


def broker_url(path: Path) -> str:
    return f"sqlite:///{path}?durability=normal"


# the run


def run(quick: bool) -> Figures:
    """Measure every figure once against a fresh server in a fresh temporary directory."""
    sizes = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-http-") as directory:
        measured = measure(Path(directory), sizes)
    return {name: measured[name] for name in FIGURES if name in measured}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def measure(directory: Path, sizes: Sizes) -> Figures:
    token = secrets.token_urlsafe(32)
    token_file = directory / "token"
    token_file.touch(mode=0o600)
    token_file.write_text(token + "\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = directory / "server.log"
    env = {**os.environ, http_app.URL_ENV: broker_url(directory / "http.db")}
    with log_path.open("w") as log:
        server = subprocess.Popen(
            server_command(port, token_file),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        with terminating(server, grace=STOP_GRACE_S):
            try:
                wait_listening(server, base)
                progress(f"server: pid {server.pid} on {base}")
                results = asyncio.run(load(base, token, server.pid, sizes))
                if server.poll() is not None:
                    raise RuntimeError(f"the server exited with {server.returncode}")
                rss = peak_rss_mb(Path(f"/proc/{server.pid}/status").read_text())
                if rss is not None:
                    results["server_rss_mb"] = rss
            except Exception:
                progress(f"server log (last lines):\n{tail(log_path)}")
                raise
            server.terminate()
            try:
                if (code := server.wait(STOP_GRACE_S)) != 0:
                    progress(f"note: the server exited with {code} on SIGTERM")
            except subprocess.TimeoutExpired:
                progress(f"note: the server did not stop within {STOP_GRACE_S:g} s of SIGTERM")
    return results


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_listening(server: subprocess.Popen[str], base: str) -> None:
    """Return once the server answers ``GET /health`` with anything at all."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} while starting")
        try:
            httpx.get(f"{base}/health", timeout=1.0)
            return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not answer within {START_TIMEOUT_S:.0f} s")
        time.sleep(0.05)


def client(
    base: str, headers: Mapping[str, str] | None = None, cookies: httpx.Cookies | None = None
) -> httpx.AsyncClient:
    """One keep-alive connection: an AsyncClient whose pool holds a single connection.

    The load spreads over many of these rather than one client with a large pool:
    httpcore's pool checks every connection it holds on each request and each response,
    which at 32 connections cost the bench process more CPU per request than the server.
    """
    return httpx.AsyncClient(
        base_url=base,
        headers=dict(headers or {}),
        cookies=cookies,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        timeout=REQUEST_TIMEOUT_S,
    )


@contextmanager
def sniffio_failing_fast() -> Iterator[None]:
    """While sniffio is not installed, make ``import sniffio`` fail at once.

    httpcore tries that import for every lock, event and cancellation shield it sets up,
    about four times per request, and falls back to asyncio when it fails. Each failed try
    searches sys.path again (about 27 us here): a fifth of the bench process's CPU per
    request. A None in sys.modules fails the import straight away, with the same fallback.
    """
    if "sniffio" in sys.modules or importlib.util.find_spec("sniffio") is not None:
        yield
        return
    sys.modules["sniffio"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if "sniffio" in sys.modules and sys.modules["sniffio"] is None:
            del sys.modules["sniffio"]


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Move every object alive now out of the garbage collector's sight for the block.

    The bench process's own full collections otherwise stop its event loop for 10-15 ms
    about every 2,500 requests (it holds every module imported by the harness and all
    suites): time that would be counted as the server's latency. The objects made during
    the block are still collected as usual.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@asynccontextmanager
async def connections(
    base: str,
    count: int,
    headers: Mapping[str, str] | None = None,
    cookies: httpx.Cookies | None = None,
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """``count`` one-connection clients, closed when the block ends."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(client(base, headers, cookies)) for _ in range(count)
        ]


Send = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


async def enqueue(connection: httpx.AsyncClient) -> httpx.Response:
    return await connection.post(ENQUEUE_PATH, content=ENQUEUE_BODY, headers=JSON_HEADERS)


async def load(base: str, token: str, pid: int, sizes: Sizes) -> Figures:
    with sniffio_failing_fast(), frozen_heap():
        return await load_server(base, token, pid, sizes)


async def load_server(base: str, token: str, pid: int, sizes: Sizes) -> Figures:
    results: Figures = {}
    async with connections(base, CONNECTIONS, {"Authorization": f"Bearer {token}"}) as pool:
        progress(f"warm-up: {WARMUP_REQUESTS} enqueues, {CONNECTIONS} at a time")
        await warm_up(pool, enqueue, 202)

        count = round(sizes.open_s * RATE)
        progress(
            f"open loop: {count:,} POST {ENQUEUE_PATH} at {RATE:,}/s over "
            f"{CONNECTIONS} keep-alive connections"
        )
        server_cpu, client_cpu, busy = process_cpu(pid), time.process_time(), machine_busy()
        with Stopwatch() as watch:
            seen = await open_loop(pool, enqueue, count)
        server_cpu = process_cpu(pid) - server_cpu
        client_cpu = time.process_time() - client_cpu
        busy = machine_busy() - busy
        check_errors(seen.errors, count, "open-loop enqueue")
        results.update(seen.figures())
        results["enqueue_server_cpu_ms"] = server_cpu / count * 1000
        results["enqueue_client_cpu_ms"] = client_cpu / count * 1000
        results["enqueue_others_cpu"] = max(0.0, busy - server_cpu - client_cpu) / watch.seconds
        progress(
            f"open loop: {results['enqueue_rps']:,.0f} req/s, p50 "
            f"{results['enqueue_p50_ms']:.2f} ms, p99 {results['enqueue_p99_ms']:.2f} ms, "
            f"CPU per request: server {results['enqueue_server_cpu_ms']:.2f} ms, "
            f"bench {results['enqueue_client_cpu_ms']:.2f} ms; other processes "
            f"{results['enqueue_others_cpu']:.2f} cores"
        )
        if results["enqueue_others_cpu"] > NOISY_CORES:
            progress(
                f"note: other processes took {results['enqueue_others_cpu']:.2f} cores of "
                f"{os.cpu_count()} during the open loop: its latencies include that contention"
            )

        progress(
            f"closed loop: POST {ENQUEUE_PATH}, {CLOSED_CLIENTS} clients, {sizes.closed_s:g} s"
        )
        results["enqueue_max_rps"] = await closed_loop(
            pool[:CLOSED_CLIENTS], enqueue, 202, sizes.closed_s, "closed-loop enqueue"
        )
        progress(f"closed loop: {results['enqueue_max_rps']:,.0f} req/s")

    async with client(base) as browser:
        target = read_target((await browser.get(CONSOLE.path)).status_code)
        if target is API_LIST:
            progress(
                f"note: GET {CONSOLE.path} answers 404 (no console on this server): "
                f"measuring GET {API_LIST.path} as {API_LIST.figure} instead"
            )
        if target.login:
            await log_in(browser, token)
        landed = await browser.get(target.path)
        if landed.status_code != 200:
            raise RuntimeError(f"GET {target.path} answered {landed.status_code}, expected 200")
        cookies = browser.cookies

    async def read(connection: httpx.AsyncClient) -> httpx.Response:
        return await connection.get(target.path)

    async with connections(base, CLOSED_CLIENTS, cookies=cookies) as readers:
        await warm_up(readers, read, 200)
        progress(f"reads: GET {target.path}, {CLOSED_CLIENTS} clients, {sizes.read_s:g} s")
        results[target.figure] = await closed_loop(
            readers, read, 200, sizes.read_s, f"GET {target.path}"
        )
        progress(f"reads: {results[target.figure]:,.0f} req/s")
    return results


async def log_in(browser: httpx.AsyncClient, token: str) -> None:
    """Log the client into the console: the login form's CSRF value and cookie, then the
    token; the session cookie stays in the client's jar."""
    form = await browser.get("/login")
    if form.status_code != 200:
        raise RuntimeError(f"GET /login answered {form.status_code}, expected 200")
    fields = {"csrf": login_csrf(form.text), "token": token, "next": "/"}
    done = await browser.post("/login", data=fields)
    if done.status_code != 303:
        raise RuntimeError(f"POST /login answered {done.status_code}, expected 303")


async def warm_up(pool: Sequence[httpx.AsyncClient], send: Send, expected: int) -> None:
    """A few requests on every connection at once (each connection opens on its first)."""
    for _ in range(max(1, WARMUP_REQUESTS // len(pool))):
        answers = await asyncio.gather(*(send(connection) for connection in pool))
        if bad := {answer.status_code for answer in answers if answer.status_code != expected}:
            raise RuntimeError(f"warm-up requests answered {sorted(bad)}, expected {expected}")


async def open_loop(pool: Sequence[httpx.AsyncClient], send: Send, count: int) -> OpenLoop:
    """Hand request ``i`` to the connections at its due time, whether or not earlier ones
    have answered; the next free connection sends it."""
    due = due_times(time.perf_counter() + LEAD_S, RATE, count)
    started = [0.0] * count
    answered = [0.0] * count
    errors: Counter[str] = Counter()
    waiting: asyncio.Queue[int | None] = asyncio.Queue()

    async def sender(connection: httpx.AsyncClient) -> None:
        while (number := await waiting.get()) is not None:
            started[number] = time.perf_counter()
            try:
                answer = await send(connection)
                if answer.status_code != 202:
                    errors[f"HTTP {answer.status_code}"] += 1
            except httpx.HTTPError as error:
                errors[type(error).__name__] += 1
            answered[number] = time.perf_counter()

    async with asyncio.timeout(count / RATE + LEAD_S + OPEN_LOOP_SLACK_S):
        async with asyncio.TaskGroup() as senders:
            for connection in pool:
                senders.create_task(sender(connection))
            for number, at in enumerate(due):
                if (wait := at - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                waiting.put_nowait(number)
            for _ in pool:
                waiting.put_nowait(None)
    return OpenLoop(due, started, answered, errors)


async def closed_loop(
    pool: Sequence[httpx.AsyncClient], send: Send, expected: int, seconds: float, what: str
) -> float:
    """Requests per second with each connection sending its next request on the answer to
    its last, for ``seconds`` (requests under way at the end are waited for and count)."""
    errors: Counter[str] = Counter()
    started = time.perf_counter()
    deadline = started + seconds

    async def loop(connection: httpx.AsyncClient) -> int:
        sent = 0
        while time.perf_counter() < deadline:
            try:
                answer = await send(connection)
                if answer.status_code != expected:
                    errors[f"HTTP {answer.status_code}"] += 1
            except httpx.HTTPError as error:
                errors[type(error).__name__] += 1
            sent += 1
        return sent

    async with asyncio.timeout(seconds + REQUEST_TIMEOUT_S + 5):
        total = sum(await asyncio.gather(*(loop(connection) for connection in pool)))
    elapsed = time.perf_counter() - started
    check_errors(errors, total, what)
    return per_second(total, elapsed)


SUITE = Suite(
    name="http",
    description="conveyor serve under load on loopback: open-loop enqueue, closed loops",
    run=run,
    ratios=ratios,
    targets=TARGETS,
    units=units_of(FIGURES, RATIOS),
)
