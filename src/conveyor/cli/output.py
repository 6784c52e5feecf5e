"""What the operator commands print: aligned tables for people, JSON with ``--json``.

Tables go to stdout with an upper-case header, numbers right-aligned and ``-`` for nothing;
notes and progress go to stderr, so stdout stays clean for pipes.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, TextIO


def text(value: Any) -> str:
    """A cell: ``-`` for None, yes/no for booleans, lists joined by commas."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(text(item) for item in value) or "-"
    if isinstance(value, Mapping):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def when(stamp: float | None) -> str:
    """An epoch time as local date and time, to the second."""
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def ago(stamp: float | None, now: float | None = None) -> str:
    """How long ago an epoch time was: ``4s ago``, ``3m ago``."""
    if stamp is None:
        return "-"
    return f"{duration(max(0.0, (now or time.time()) - stamp), whole=True)} ago"


_UNITS = (("d", 86_400.0), ("h", 3_600.0), ("m", 60.0), ("s", 1.0))


def duration(seconds: float | None, *, whole: bool = False) -> str:
    """Seconds in the largest unit that divides them (``7d``, ``90s``); ``-`` for None.

    With ``whole``, rounded down to the largest unit that fits (for ages).
    """
    if seconds is None:
        return "-"
    for unit, size in _UNITS:
        if whole and seconds >= size:
            return f"{int(seconds // size)}{unit}"
        if not whole and seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if whole:
        return "0s"
    return f"{seconds * 1000:g}ms" if 0 < seconds < 1 else f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: its header, the row key it shows, how, and which side it hugs."""

    header: str
    key: str
    format: Callable[[Any], str] = text
    right: bool = False


def number(header: str, key: str) -> Column:
    return Column(header, key, text, right=True)


def table(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> str:
    """Aligned columns under an upper-case header; the last column is not padded."""
    cells = [[c.header.upper() for c in columns]]
    cells += [[c.format(row.get(c.key)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = []
    for line in cells:
        parts = [
            cell.rjust(width) if column.right else cell.ljust(width)
            for cell, width, column in zip(line, widths, columns, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def fields(pairs: Sequence[tuple[str, str]]) -> str:
    """``label:  value`` lines, values aligned; multi-line values are indented under them."""
    width = max((len(label) for label, _ in pairs), default=0) + 2
    lines = []
    for label, value in pairs:
        first, *rest = value.splitlines() or [""]
        lines.append(f"{label + ':':<{width}}{first}".rstrip())
        lines.extend(f"{'':<{width}}{line}".rstrip() for line in rest)
    return "\n".join(lines)


def to_json(value: Any) -> Any:
    """Plain JSON data from the values the commands collect (enums, tuples, bytes)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(v) for v in value]
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def print_json(value: Any, stream: TextIO | None = None) -> None:
    print(json.dumps(to_json(value), indent=2), file=stream or sys.stdout)


def json_line(value: Mapping[str, Any]) -> str:
    return json.dumps(to_json(value), separators=(",", ":"), ensure_ascii=False)


def show(as_json: bool, rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> None:
    """Rows as a table, or as a JSON array with ``--json``."""
    if as_json:
        print_json(list(rows))
    else:
        print(table(columns, rows))


def payload(name: str, data: bytes | None) -> dict[str, Any]:
    """``{name: text}`` for UTF-8 (or None), else ``{name_base64: ...}`` for other bytes."""
    if data is None:
        return {name: None}
    try:
        return {name: data.decode()}
    except UnicodeDecodeError:
        return {f"{name}_base64": base64.b64encode(data).decode()}


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def note(message: str) -> None:
    """A remark for the person at the terminal, on stderr."""
    print(message, file=sys.stderr)


class Progress:
    """A progress line on stderr (only when it is a terminal), redrawn at most 10 times a second.

    ``done`` clears it; the command then prints its final count.
    """

    def __init__(self, verb: str, total: int | None = None, stream: TextIO | None = None) -> None:
        self.verb = verb
        self.total = total
        self.count = 0
        self.stream = stream or sys.stderr
        self.live = _isatty(self.stream)
        self._drawn_at = 0.0

    def advance(self, count: int) -> None:
        self.count += count
        now = time.monotonic()
        if self.live and now - self._drawn_at >= 0.1:
            self._drawn_at = now
            self.stream.write(f"\r\x1b[K{self.line()}")
            self.stream.flush()

    def line(self) -> str:
        if not self.total:
            return f"{self.verb} {self.count}"
        share = min(self.count / self.total, 1.0)
        bar = "#" * int(share * 30)
        return f"{self.verb} [{bar:<30}] {self.count}/{self.total} {share:4.0%}"

    def done(self) -> None:
        if self.live and self._drawn_at:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
