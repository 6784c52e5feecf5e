"""The CLI's small pieces: tables, durations, sizes, dates, KEY=VALUE lists, progress."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from conveyor.cli.common import key_values, parse_datetime, parse_duration, parse_size
from conveyor.cli.output import Column, Progress, ago, duration, fields, number, table, text
from conveyor.errors import ConfigError


def test_tables_align_columns_under_an_upper_case_header() -> None:
    rows = [{"name": "orders", "ready": 1200, "to": None}, {"name": "q", "ready": 7, "to": "x"}]
    columns = [Column("name", "name"), number("ready", "ready"), Column("dead letters", "to")]
    assert table(columns, rows).splitlines() == [
        "NAME    READY  DEAD LETTERS",
        "orders   1200  -",
        "q           7  x",
    ]
    assert table(columns, []) == "NAME  READY  DEAD LETTERS"


def test_cells_and_fields_read_well() -> None:
    assert [text(v) for v in (None, "", True, False, 1.50, ["a", "b"], {"k": 1}, 3)] == [
        "-", "-", "yes", "no", "1.5", "a,b", '{"k":1}', "3",
    ]  # fmt: skip
    assert fields([("job id", "j1"), ("traceback", "line 1\nline 2")]).splitlines() == [
        "job id:    j1",
        "traceback: line 1",
        "           line 2",
    ]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-"), (0, "0s"), (0.25, "250ms"), (1.5, "1.5s"), (90, "90s"), (120, "2m"),
     (7200, "2h"), (7 * 86400, "7d")],
)  # fmt: skip
def test_durations_show_in_the_largest_unit_that_divides_them(
    seconds: float | None, shown: str
) -> None:
    assert duration(seconds) == shown


def test_ages_round_down() -> None:
    assert ago(100.0, now=100.4) == "0s ago"
    assert ago(0.0, now=3 * 3600 + 59) == "3h ago"
    assert ago(None) == "-"


def test_durations_sizes_and_dates_parse_or_say_what_to_write() -> None:
    assert [parse_duration(t) for t in ("30", "1.5", "500ms", "30s", "5m", "2h", "7d")] == [
        30, 1.5, 0.5, 30, 300, 7200, 7 * 86400,
    ]  # fmt: skip
    assert [parse_size(t) for t in ("10", "64KiB", "10MB", "1GiB")] == [
        10, 64 * 1024, 10_000_000, 1024**3,
    ]  # fmt: skip
    assert (
        parse_datetime("2024-05-01T12:00:00Z") == datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()
    )
    for parse, bad, hint in [
        (parse_duration, "soon", "e.g. 500ms"),
        (parse_size, "big", "e.g. 64KiB"),
        (parse_datetime, "May 1st", "ISO 8601"),
    ]:
        with pytest.raises(ConfigError, match=hint):
            parse(bad)


def test_key_values_take_commas_and_list_values() -> None:
    assert key_values(["a=1,b=2", "c=x=y"], "--config") == {"a": "1", "b": "2", "c": "x=y"}
    assert key_values(["cleanup_policy=compact,delete,retention=1d"], "--config") == {
        "cleanup_policy": "compact,delete",
        "retention": "1d",
    }
    with pytest.raises(ConfigError, match="'nothing' is not KEY=VALUE"):
        key_values(["nothing"], "--config")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_only_on_a_terminal_and_clears_itself() -> None:
    quiet = io.StringIO()
    progress = Progress("published", stream=quiet)
    progress.advance(10)
    progress.done()
    assert (quiet.getvalue(), progress.count) == ("", 10)

    terminal = _Terminal()
    bar = Progress("replayed", total=4, stream=terminal)
    bar.advance(2)
    bar.advance(1)  # within 0.1 s: not redrawn
    bar.done()
    assert terminal.getvalue() == (
        "\r\x1b[Kreplayed [###############               ] 2/4  50%\r\x1b[K"
    )
