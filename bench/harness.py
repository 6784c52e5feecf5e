"""Shared helpers of the benchmark suites: timing, machine description, child processes, JSON.

Everything here except ``run_child`` / ``machine`` is pure and cheap, so it can be unit
tested without timing anything (tests/unit/test_bench_harness.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import math
import os
import platform
import select
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Figures = dict[str, float]

ROOT = Path(__file__).resolve().parent.parent
DRAIN_POLL_S = 0.01
"""How often a drain's parent looks for its end (Conveyor's and every peer's alike): the
end is seen up to this late, under 1 % of a full-size drain."""
"""The repository root: child processes run here so ``python -m bench.…`` imports."""

_STARTED = time.monotonic()


# progress and timing


def progress(message: str) -> None:
    """One line of progress on stderr, stamped with the seconds since the harness started."""
    print(f"[bench {time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


class Stopwatch:
    """Elapsed wall time of a ``with`` block, in seconds (``perf_counter``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


def per_second(count: int, seconds: float) -> float:
    """A rate; a zero duration (clock too coarse) counts as one nanosecond."""
    return count / max(seconds, 1e-9)


# statistics


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by linear interpolation between closest ranks.

    The same definition as numpy's default ("linear"): for n sorted values, rank
    ``p/100 * (n - 1)``; ``percentile(v, 50)`` is the median.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100 or math.isnan(p):
        raise ValueError(f"percentile must be within 0-100, not {p}")
    ordered = sorted(values)
    rank = p / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    fraction = rank - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def median_figures(runs: Sequence[Mapping[str, float]]) -> Figures:
    """Per figure, the median over the runs that have it (keys in first-seen order)."""
    names: dict[str, None] = {}
    for run in runs:
        names.update(dict.fromkeys(run))
    return {
        name: float(statistics.median([run[name] for run in runs if name in run])) for name in names
    }


def spread(runs: Sequence[Mapping[str, float]], name: str) -> tuple[float, float] | None:
    """(min, max) of a figure over the runs, or None when it was measured fewer than twice."""
    values = [run[name] for run in runs if name in run]
    return (min(values), max(values)) if len(values) > 1 else None


# targets


@dataclass(frozen=True, slots=True)
class Target:
    """A goal a figure must reach, e.g. ``publish_batch_per_s >= 100000``.

    ``alternative`` is a second (figure, op, threshold) that also satisfies the target, for
    goals such as "within 10 % or within 5 MB".
    """

    label: str
    figure: str
    op: Literal[">=", "<="]
    threshold: float
    alternative: tuple[str, Literal[">=", "<="], float] | None = None

    def met(self, figures: Mapping[str, float]) -> bool | None:
        """Whether the figures meet the target; None when the figure was not measured."""
        if self.figure not in figures:
            return None
        if _holds(figures[self.figure], self.op, self.threshold):
            return True
        if self.alternative is not None:
            name, op, threshold = self.alternative
            return name in figures and _holds(figures[name], op, threshold)
        return False

    def describe(self) -> str:
        text = f"{self.figure} {self.op} {self.threshold:g}"
        if self.alternative is not None:
            name, op, threshold = self.alternative
            text += f" or {name} {op} {threshold:g}"
        return text


def _holds(value: float, op: str, threshold: float) -> bool:
    return value >= threshold if op == ">=" else value <= threshold


@dataclass(frozen=True)
class Suite:
    """A named set of measurements.

    ``run(quick)`` measures once and returns raw figures; ``ratios`` derives comparisons
    from the figures of that same run (so both sides of a ratio share the machine's mood).
    ``parts`` names the parts a run can be narrowed to (``--only``, see ``selected``).
    """

    name: str
    description: str
    run: Callable[[bool], Figures]
    ratios: Callable[[Mapping[str, float]], Figures]
    targets: Sequence[Target] = ()
    units: Mapping[str, str] = field(default_factory=dict)
    parts: Sequence[str] = ()


ONLY_ENV = "CONVEYOR_BENCH_ONLY"
"""Comma-separated parts of a suite to run (``python -m bench SUITE --only redis`` sets
it); unset or empty, every part runs."""


def only_parts() -> frozenset[str]:
    """The parts ``CONVEYOR_BENCH_ONLY`` names; empty when it names none (run them all)."""
    return frozenset(filter(None, (p.strip() for p in os.environ.get(ONLY_ENV, "").split(","))))


def selected(part: str) -> bool:
    """Whether this run measures ``part``: every part unless ``--only`` named others."""
    only = only_parts()
    return not only or part in only


def units_of(*tables: Mapping[str, tuple[str, str]]) -> dict[str, str]:
    """Each figure's unit, from a suite's ``name -> (unit, what it measures)`` tables."""
    return {name: unit for table in tables for name, (unit, _) in table.items()}


# the report


def build_report(
    suite: str,
    machine_info: Mapping[str, Any],
    runs: Sequence[tuple[Mapping[str, float], Mapping[str, float]]],
    targets: Sequence[Target] = (),
    **extra: Any,
) -> dict[str, Any]:
    """The JSON document of a suite: medians of each figure and ratio over ``runs``.

    ``runs`` holds one (results, ratios) pair per repetition. Ratios are medians of the
    per-run ratios, not ratios of the medians. Targets are judged on the medians.
    """
    if not runs:
        raise ValueError("a report needs at least one run")
    results = median_figures([r for r, _ in runs])
    ratios = median_figures([q for _, q in runs])
    figures = {**results, **ratios}
    report: dict[str, Any] = {
        "suite": suite,
        "machine": dict(machine_info),
        "results": results,
        "ratios": ratios,
        "targets": [
            {
                "label": target.label,
                "figure": target.figure,
                "rule": target.describe(),
                "value": figures.get(target.figure),
                "met": target.met(figures),
            }
            for target in targets
        ],
        "repeat": len(runs),
        "runs": [{"results": dict(r), "ratios": dict(q)} for r, q in runs],
    }
    report.update(extra)
    return report


def write_json(path: str | Path, report: Mapping[str, Any]) -> None:
    """Write the report as indented JSON (atomically: a reader never sees half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    temporary.replace(target)


# the machine


def machine() -> dict[str, Any]:
    """What the figures came from: CPU, cores, memory, kernel, Python and SQLite versions."""
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "kernel": f"{platform.system()} {platform.release()}",
        "os": _os_name(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "load_average": _load_average(),
    }


def _proc_fields(path: str, separator: str = ":") -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        text = Path(path).read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        key, found, value = line.partition(separator)
        if found:
            fields.setdefault(key.strip(), value.strip())
    return fields


def _cpu_model() -> str:
    return _proc_fields("/proc/cpuinfo").get("model name") or platform.processor() or "unknown"


def _memory_gb() -> float | None:
    total = _proc_fields("/proc/meminfo").get("MemTotal")  # "16318472 kB"
    return round(int(total.split()[0]) / 1024**2, 1) if total else None


def _os_name() -> str:
    name = _proc_fields("/etc/os-release", "=").get("PRETTY_NAME")
    return name.strip('"') if name else platform.platform()


def _load_average() -> list[float] | None:
    try:
        return [round(load, 2) for load in os.getloadavg()]
    except OSError:
        return None


def source_state() -> dict[str, Any]:
    """Which conveyor was measured: where it was imported from, its git commit, and whether
    its package directory had uncommitted changes (with a hash of them, to tell trees apart).
    """
    spec = importlib.util.find_spec("conveyor")
    origin = spec.origin if spec else None
    package = Path(origin).parent if origin else ROOT

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=package, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    status = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    diff = git("diff", "HEAD", "--", ".")
    return {
        "conveyor_imported_from": origin,
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": None if status is None else bool(status),
        "uncommitted_diff_sha1": hashlib.sha1(diff.encode()).hexdigest() if diff else None,
    }


# child processes


@dataclass(frozen=True, slots=True)
class ChildResult:
    """What a child process printed on stdout, and its peak resident memory."""

    stdout: str
    returncode: int
    peak_rss_mb: float


def bench_module_command(module: str, *args: str) -> list[str]:
    """The command line running ``python -m module args…`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def run_child(command: Sequence[str], *, timeout: float = 600.0) -> ChildResult:
    """Run a child to completion; return its stdout and its own peak RSS.

    The peak comes from ``wait4``'s resource usage of exactly this child (``ru_maxrss``,
    the kernel's high-water mark of its resident set), so neither the parent nor other
    children count. stderr passes through, for the child's progress lines.
    """
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        with process.stdout:
            stdout = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        watchdog.cancel()
        if process.returncode is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}")
    return ChildResult(stdout, process.returncode, ru_maxrss_mb(usage.ru_maxrss))


def ru_maxrss_mb(ru_maxrss: int) -> float:
    """``ru_maxrss`` in MiB: kilobytes on Linux, bytes on macOS."""
    return ru_maxrss / 1024**2 if sys.platform == "darwin" else ru_maxrss / 1024


@contextmanager
def terminating(process: subprocess.Popen[str], grace: float = 5.0) -> Iterator[None]:
    """Make sure ``process`` is gone when the block ends, however it ends."""
    try:
        yield
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# cross-process latency: a child announces itself on stdout, then waits on a wake-up socket


def expect_line(process: subprocess.Popen[str], expected: str, *, timeout: float) -> None:
    """Read one line from the child's stdout within ``timeout``; it must be ``expected``."""
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline().strip() if readable else ""
    if line != expected:
        raise RuntimeError(f"the child process did not say {expected!r} (said {line!r})")


async def wait_for_waiter(watcher: sqlite3.Connection, process: subprocess.Popen[str]) -> None:
    """Return once a receiver or fetcher is registered as waiting, i.e. asleep on its socket."""
    while not watcher.execute("SELECT count(*) FROM waiters").fetchone()[0]:
        if process.poll() is not None:
            raise RuntimeError(f"the latency consumer exited with {process.returncode}")
        await asyncio.sleep(0.0005)
