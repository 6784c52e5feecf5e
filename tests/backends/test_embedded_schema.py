"""The embedded store's file format: stamping, reopening, migrating, durability modes."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conveyor import Message, QueueSpec, open_broker
from conveyor.brokers.embedded.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from conveyor.errors import DatabaseError


def _pragmas(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as raw:
        (application_id,) = raw.execute("PRAGMA application_id").fetchone()
        (version,) = raw.execute("PRAGMA user_version").fetchone()
    raw.close()
    return application_id, version


def _schema(path: Path) -> set[tuple[str, str, str]]:
    with sqlite3.connect(path) as raw:
        rows = raw.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL")
        schema = {(kind, name, " ".join(sql.split())) for kind, name, sql in rows}
    raw.close()
    return schema


def _tables(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, as column -> value, sorted for comparison."""
    with sqlite3.connect(path) as raw:
        raw.row_factory = sqlite3.Row
        names = [
            name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        tables = {
            name: sorted((dict(row) for row in raw.execute(f'SELECT * FROM "{name}"')), key=repr)
            for name in names
        }
    raw.close()
    return tables


def _listing(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


async def _round_trip(url: str, queue: str = "check") -> None:
    """The store works: a queue can be declared, fed and drained."""
    async with open_broker(url) as broker:
        await broker.declare_queue(QueueSpec(queue))
        await broker.publish(Message(b"ping", routing_key=queue))
        (delivery,) = await broker.receive(queue)
        await broker.ack(delivery)
        assert delivery.message.body == b"ping"
        assert (await broker.queue_stats(queue)).depth == 0


async def test_fresh_file_gets_the_application_id_and_the_latest_schema_version(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fresh.db"
    async with open_broker(_url(path)) as broker:
        await broker.ping()
    assert _pragmas(path) == (APPLICATION_ID, SCHEMA_VERSION)


async def test_existing_empty_file_becomes_a_conveyor_store(tmp_path: Path) -> None:
    path = tmp_path / "touched.db"
    path.touch()
    await _round_trip(_url(path))
    assert _pragmas(path) == (APPLICATION_ID, SCHEMA_VERSION)


async def test_reopening_a_current_database_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "conveyor.db"
    async with open_broker(_url(path)) as broker:
        await broker.declare_queue(QueueSpec("orders"))
        await broker.publish(Message(b"kept", routing_key="orders"))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    for _ in range(2):
        async with open_broker(_url(path)) as broker:
            assert (await broker.queue_stats("orders")).depth == 1
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert _listing(tmp_path) == ["conveyor.db"]


def _partially_migrated(path: Path, steps: int) -> None:
    """A store as an older Conveyor left it: the first ``steps`` migrations applied."""
    raw = sqlite3.connect(path, isolation_level=None)
    for step in MIGRATIONS[:steps]:
        for statement in step:
            raw.execute(statement)
    raw.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    raw.execute(f"PRAGMA user_version = {steps}")
    raw.close()


@pytest.mark.parametrize("steps", range(len(MIGRATIONS)))
async def test_older_schema_is_migrated_to_the_latest_on_open_keeping_its_data(
    tmp_path: Path, steps: int
) -> None:
    latest = tmp_path / "latest.db"
    async with open_broker(_url(latest)) as broker:
        await broker.ping()
    old = tmp_path / "old.db"
    _partially_migrated(old, steps)
    assert _pragmas(old) == (APPLICATION_ID, steps)
    before = _tables(old)

    async with open_broker(_url(old)) as broker:
        await broker.ping()

    assert _pragmas(old) == (APPLICATION_ID, SCHEMA_VERSION)
    assert _schema(old) == _schema(latest)
    after = _tables(old)
    for table, rows in before.items():
        columns = list(rows[0]) if rows else []
        kept = [{column: row.get(column) for column in columns} for row in after[table]]
        assert [row for row in rows if row not in kept] == [], f"migration lost rows of {table}"
    await _round_trip(_url(old))


async def test_failed_migration_leaves_the_file_at_its_old_version(tmp_path: Path) -> None:
    path = tmp_path / "conveyor.db"
    _partially_migrated(path, 0)
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE waiters (stray INTEGER)")  # clashes with a later statement
    raw.close()
    with pytest.raises(DatabaseError, match="waiters"):
        async with open_broker(_url(path)):
            pass
    assert _pragmas(path) == (APPLICATION_ID, 0)
    assert list(_tables(path)) == ["waiters"]


@pytest.mark.parametrize("durability", ["fsync", "normal", "memory"])
async def test_each_durability_mode_publishes_and_receives(tmp_path: Path, durability: str) -> None:
    url = f"{_url(tmp_path / 'conveyor.db')}?durability={durability}"
    bodies = [f"m{i}".encode() for i in range(10)]
    async with open_broker(url) as broker:
        await broker.declare_queue(QueueSpec("orders"))
        assert (
            await broker.publish_batch([Message(body, routing_key="orders") for body in bodies])
            == [1] * 10
        )
    async with open_broker(url) as broker:
        deliveries = await broker.receive("orders", max_messages=100)
        await broker.ack_many(deliveries)
        assert [d.message.body for d in deliveries] == bodies
        assert (await broker.queue_stats("orders")).depth == 0
