"""``python -m bench SUITE [--quick] [--json PATH] [--repeat N] [--only PART,...]``: run a
suite, print, save.

``--only`` narrows a suite to some of its parts (``backends``: rabbitmq, kafka, redis;
``tasks``: embedded, rabbitmq, redis), e.g. ``python -m bench backends --only redis``.

With ``--repeat N`` the whole suite runs N times and every figure (and every ratio, taken
within its own run) is reported as the median of the N runs, with the min-max spread.
Progress goes to stderr; the table goes to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bench import backends, http, queues, streams, tasks
from bench.harness import (
    ONLY_ENV,
    Figures,
    Suite,
    build_report,
    machine,
    progress,
    source_state,
    spread,
    write_json,
)

SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (queues.SUITE, tasks.SUITE, streams.SUITE, http.SUITE, backends.SUITE)
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Conveyor's benchmark harness."
    )
    parser.add_argument("suite", choices=sorted(SUITES), help="the suite to run")
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes: a smoke run in under a minute"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run the suite N times and report medians (default 1)",
    )
    parser.add_argument(
        "--only",
        metavar="PART[,PART]",
        help="run only these parts of the suite (backends: rabbitmq, kafka, redis; "
        "tasks: embedded, rabbitmq, redis)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.only is not None:
        args.only = [part.strip() for part in args.only.split(",") if part.strip()]
        known = SUITES[args.suite].parts
        unknown = [part for part in args.only if part not in known]
        if not args.only or unknown:
            choices = ", ".join(known) if known else "none: it has no parts"
            parser.error(f"--only for {args.suite}: choose from {choices}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    suite = SUITES[args.suite]
    if args.only:
        os.environ[ONLY_ENV] = ",".join(args.only)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    runs: list[tuple[Figures, Figures]] = []
    for number in range(1, args.repeat + 1):
        progress(f"{suite.name}: run {number}/{args.repeat}{' (quick)' if args.quick else ''}")
        results = suite.run(args.quick)
        runs.append((results, suite.ratios(results)))
    report = build_report(
        suite.name,
        machine(),
        runs,
        suite.targets,
        quick=args.quick,
        started_at=started_at,
        elapsed_s=round(time.monotonic() - started, 1),
        source=source_state(),
        units=dict(suite.units),
        only=args.only,
    )
    print(format_report(report, suite))
    if args.json:
        write_json(args.json, report)
        progress(f"wrote {args.json}")
    return 0


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("msg/s", "tasks/s", "req/s"):
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.3f}"
    if unit == "MB":
        return f"{value:.1f}"
    return f"{value:.3f}"


def _rows(
    figures: Mapping[str, float],
    per_run: list[Mapping[str, float]],
    units: Mapping[str, str],
) -> list[list[str]]:
    rows = []
    for name, value in figures.items():
        unit = units.get(name, "")
        low_high = spread(per_run, name)
        rows.append(
            [
                name,
                format_value(value, unit),
                (
                    f"{format_value(low_high[0], unit)} - {format_value(low_high[1], unit)}"
                    if low_high
                    else ""
                ),
                unit,
            ]
        )
    return rows


def table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(["-" * width for width in widths]), *map(line, rows)])


def format_report(report: Mapping[str, Any], suite: Suite) -> str:
    """The human summary: machine, figures, ratios, and each target met or not."""
    info = report["machine"]
    runs = report["runs"]
    units = suite.units
    lines = [
        f"suite {report['suite']}{' (quick)' if report.get('quick') else ''}"
        f"{' (only ' + ', '.join(report['only']) + ')' if report.get('only') else ''}: "
        f"median of {report['repeat']} run(s)",
        f"machine: {info['cpu_model']}, {info['cores']} cores, {info['python']}, "
        f"SQLite {info['sqlite']}, {info['kernel']}",
        "",
        table(
            ["figure", "median", "min - max", "unit"],
            _rows(report["results"], [run["results"] for run in runs], units),
            right={1, 2},
        ),
        "",
        table(
            ["ratio", "median", "min - max", "unit"],
            _rows(report["ratios"], [run["ratios"] for run in runs], units),
            right={1, 2},
        ),
        "",
    ]
    target_rows = []
    for target in report["targets"]:
        met = target["met"]
        unit = units.get(target["figure"], "")
        target_rows.append(
            [
                target["label"],
                target["rule"],
                format_value(target["value"], unit),
                "n/a" if met is None else ("MET" if met else "NOT MET"),
            ]
        )
    lines.append(table(["target", "rule", "value", "met"], target_rows, right={2}))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
