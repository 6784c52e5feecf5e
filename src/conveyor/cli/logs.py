"""Logging for the long-running commands (worker, serve): a level and a line format.

``text`` is one readable line per event; ``json`` is one JSON object per line for log
collectors, with the fields a record carries beyond the standard ones (``job_id``,
``task``, ``attempt``, ``reason``...). An application that configured logging itself
(handlers on the root logger) keeps its configuration; only the level is applied.
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime
from typing import Any

LEVELS = ("critical", "error", "warning", "info", "debug")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def add_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "-l",
        "--log-level",
        "--loglevel",
        dest="log_level",
        type=str.lower,
        default="info",
        choices=LEVELS,
        help="least severe level logged (default info)",
    )
    command.add_argument(
        "--log-format",
        default="text",
        choices=FORMATS,
        help="text lines, or one JSON object per line (default text)",
    )


def configure(level: str, log_format: str) -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root.addHandler(handler)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((key, value) for key, value in record.__dict__.items() if key not in _STANDARD)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
