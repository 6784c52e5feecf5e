"""The ``http`` suite's pure helpers: the open loop's schedule and figures, the login form,
/proc CPU times, the choice of read figure, ratios and targets.

Nothing here starts a server or times anything: the suite runs with ``python -m bench http``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest
from bench import http
from bench.harness import build_report


def test_due_times_are_a_fixed_grid_at_the_rate() -> None:
    assert http.due_times(10.0, 4, 5) == pytest.approx([10.0, 10.25, 10.5, 10.75, 11.0])
    assert http.due_times(0.0, 1000, 0) == []
    with pytest.raises(ValueError, match="rate must be positive"):
        http.due_times(0.0, 0, 3)


def test_open_loop_latency_runs_from_the_due_time_not_the_send() -> None:
    due = [0.0, 0.001, 0.002, 0.003]
    # the third request waited 5 ms for a connection: that wait is part of its latency
    started = [0.0, 0.001, 0.007, 0.007]
    answered = [0.002, 0.003, 0.009, 0.010]
    figures = http.OpenLoop(due, started, answered, {}).figures()
    assert figures["enqueue_p50_ms"] == pytest.approx(4.5)
    assert figures["enqueue_max_ms"] == pytest.approx(7.0)
    assert figures["enqueue_p99_ms"] == pytest.approx(7.0)
    assert figures["enqueue_send_lag_p99_ms"] == pytest.approx(4.97)
    # 4 answered from the first due time to the last answer, 10 ms
    assert figures["enqueue_rps"] == pytest.approx(400.0)
    assert set(figures) <= set(http.FIGURES)


def test_open_loop_figures_need_requests() -> None:
    with pytest.raises(ValueError, match="sent nothing"):
        http.OpenLoop([], [], [], {}).figures()


def test_check_errors_fails_the_run_on_any_failed_request() -> None:
    http.check_errors({}, 10, "enqueue")
    with pytest.raises(RuntimeError, match=r"3 of 10 enqueue requests failed: 1 x HTTP 500, 2 x"):
        http.check_errors({"ReadTimeout": 2, "HTTP 500": 1}, 10, "enqueue")


def test_login_csrf_reads_the_hidden_field() -> None:
    page = (
        '<form method="post" action="/login">\n'
        '  <input type="hidden" name="next" value="/">\n'
        '  <input type="hidden" name="csrf" value="abc-DEF_123">\n'
        '  <input id="token" name="token" type="password">\n'
        "</form>"
    )
    assert http.login_csrf(page) == "abc-DEF_123"
    assert http.login_csrf("<input value='x1' name='csrf' type='hidden'>") == "x1"
    for broken in ("<p>no form</p>", '<input name="csrf" value="">', '<input name="csrf">'):
        with pytest.raises(RuntimeError, match="no csrf field"):
            http.login_csrf(broken)


def test_cpu_seconds_sums_user_and_system_time_past_the_command_name() -> None:
    # fields 14 (utime) and 15 (stime) are 250 and 50 ticks; the name holds spaces and ")"
    rest = ["S", "1", "2", "3", "0", "-1", "4194560", "10", "0", "0", "0", "250", "50", "0", "0"]
    stat = "1234 (python -m a) b) " + " ".join(rest)
    assert http.cpu_seconds(stat, 100) == pytest.approx(3.0)


def test_read_target_falls_back_to_the_api_list_without_a_console() -> None:
    assert http.read_target(404) is http.API_LIST
    assert http.read_target(303) is http.CONSOLE  # to the login page
    assert http.read_target(200) is http.CONSOLE
    assert http.CONSOLE.login
    assert not http.API_LIST.login
    assert {http.CONSOLE.figure, http.API_LIST.figure} <= set(http.FIGURES)


def test_server_command_serves_the_bench_app_on_loopback_with_the_token_file() -> None:
    command = http.server_command(8123, Path("/tmp/x/token"))
    assert command[1:5] == ["-m", "conveyor", "serve", "bench.http_app:app"]
    options = dict(zip(command[5::2], command[6::2], strict=True))
    assert options == {
        "--host": "127.0.0.1",
        "--port": "8123",
        "--token-file": "/tmp/x/token",
        "--log-level": "warning",
    }
    assert http.broker_url(Path("/tmp/x/http.db")) == "sqlite:////tmp/x/http.db?durability=normal"


def test_ratios_and_targets() -> None:
    assert http.ratios({}) == {}
    assert http.ratios({"enqueue_max_rps": 2500.0}) == {"enqueue_max_vs_rate": 2.5}

    def verdicts(results: dict[str, float]) -> list[bool | None]:
        report = build_report("http", {}, [(results, http.ratios(results))], http.TARGETS)
        return [target["met"] for target in report["targets"]]

    assert verdicts({"enqueue_p99_ms": 12.0, "enqueue_rps": 998.0}) == [True, True]
    assert verdicts({"enqueue_p99_ms": 20.5, "enqueue_rps": 998.0}) == [False, True]
    assert verdicts({"enqueue_p99_ms": 3.0, "enqueue_rps": 900.0}) == [True, False]
    assert verdicts({}) == [None, None]


def test_every_figure_and_ratio_has_a_unit() -> None:
    assert set(http.SUITE.units) == set(http.FIGURES) | set(http.RATIOS)
    assert http.SUITE.units["enqueue_rps"] == "req/s"


def test_busy_seconds_counts_every_busy_state_but_idle_and_iowait() -> None:
    stat = "cpu  100 5 20 9000 40 1 2 3 0 0\ncpu0 50 2 10 4500 20 1 1 1 0 0\nintr 1 2\n"
    assert http.busy_seconds(stat, 100) == pytest.approx(1.31)
    with pytest.raises(ValueError, match="no cpu line"):
        http.busy_seconds("intr 1 2\n", 100)


def test_sniffio_failing_fast_leaves_sys_modules_as_it_found_it() -> None:
    before = sys.modules.get("sniffio")
    installed = importlib.util.find_spec("sniffio") is not None
    with http.sniffio_failing_fast():
        if installed:
            importlib.import_module("sniffio")
        else:
            with pytest.raises(ImportError):
                importlib.import_module("sniffio")
    assert sys.modules.get("sniffio") is before
