"""Task declarations are checked when declared: a bad option is a ConfigError at once."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.app import App
from conveyor.brokers.stream_types import Record
from conveyor.errors import ConfigError, NotSupported
from conveyor.tasks.task import Executor, RateLimit


def noop() -> None:
    return None


async def async_noop() -> None:
    return None


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_retries": -1}, "max_retries must be an integer >= 0"),
        ({"max_retries": 1.5}, "max_retries must be an integer >= 0"),
        ({"backoff": [60, -5]}, "negative|>= 0"),
        ({"priority": 300}, "priority must be an integer 0-9"),
        ({"priority": 10}, r"priority must be an integer 0-9 \(task queues have 10 levels"),
        ({"queue": "bad queue"}, "queue name"),
        ({"timeout": -1}, "timeout"),
        ({"rate_limit": "fast"}, "COUNT/UNIT"),
        ({"executor": "async"}, "does not fit a sync function"),
        ({"max_retires": 3}, r"unknown task option\(s\) max_retires; valid: .*max_retries"),
    ],
)
def test_bad_task_options_are_refused_at_declaration(options: dict[str, Any], match: str) -> None:
    app = App("memory://")
    with pytest.raises(ConfigError, match=match):
        app.task(**options)(noop)
    assert app.tasks == {}


@pytest.mark.parametrize("priority", [10, 255, -1, True])
def test_a_priority_beyond_the_task_queues_levels_is_refused_at_send(priority: object) -> None:
    app = App("memory://")
    task = app.task(noop)
    with pytest.raises(ConfigError, match="priority must be an integer 0-9"):
        task.submission(priority=priority)  # type: ignore[arg-type]
    assert task.submission(priority=9).message.priority == 9


def test_async_functions_run_on_the_loop_and_sync_ones_in_threads_by_default() -> None:
    app = App("memory://")
    assert app.task(noop).options.executor is Executor.THREAD
    assert app.task(async_noop).options.executor is Executor.ASYNC
    with pytest.raises(ConfigError, match="does not fit an async function"):
        app.task(name="other", executor="thread")(async_noop)


def test_duplicate_task_names_are_refused() -> None:
    app = App("memory://")
    app.task(name="same")(noop)
    with pytest.raises(ConfigError, match="already registered"):
        app.task(name="same")(async_noop)


@pytest.mark.parametrize(
    ("text", "per_second"), [("100/s", 100.0), ("10/m", 10 / 60), ("30/2h", 30 / 7200)]
)
def test_rate_limits_are_parsed_from_count_per_unit(text: str, per_second: float) -> None:
    assert RateLimit.parse(text).per_second == pytest.approx(per_second)


def test_periodic_needs_exactly_one_schedule() -> None:
    app = App("memory://")
    with pytest.raises(ConfigError):
        app.periodic()(noop)
    with pytest.raises(ConfigError):
        app.periodic(cron="* * * * *", every=5)(noop)
    app.periodic(cron="*/5 * * * *")(noop)
    assert len(app.schedules) == 1


def test_a_task_on_a_broker_without_queues_is_refused_at_registration() -> None:
    app = App("kafka://127.0.0.1:9092")
    with pytest.raises(NotSupported, match=r"kafka broker does not support tasks.*sqlite://"):

        @app.task
        def send_email() -> None: ...

    assert app.tasks == {}

    @app.subscriber("orders", group="billing")
    def bill(record: Record) -> None: ...

    assert len(app.subscribers) == 1  # events are what a kafka:// App is for
