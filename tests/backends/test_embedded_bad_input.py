"""Bad input to the embedded broker: each raises a specific ConveyorError that says what to
do, and nothing already stored is lost or changed.

"Unchanged" is checked on the bytes of the database file, taken with no connection open
(so the write-ahead log has been checkpointed into the file), and on the stored messages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from conveyor import Binding, Broker, ExchangeSpec, Message, QueueSpec, open_broker
from conveyor.brokers.embedded import EmbeddedOptions
from conveyor.errors import (
    ConfigError,
    DatabaseLocked,
    ExchangeNotFound,
    MessageTooLarge,
    NotAConveyorDatabase,
    SchemaTooNew,
)

QUEUE = "orders"
SEEDED = [f"order-{i}".encode() for i in range(3)]


class Store:
    """A database file holding queue ``orders`` with the messages in SEEDED."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"

    def digest(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def files(self) -> list[str]:
        return _listing(self.path.parent)

    async def bodies(self) -> list[bytes]:
        """Receive (and ack) everything stored, in order: the end-of-test content check."""
        async with open_broker(self.url) as broker:
            deliveries = await broker.receive(QUEUE, max_messages=1000)
            await broker.ack_many(deliveries)
        return [d.message.body for d in deliveries]


@pytest.fixture
async def store(tmp_path: Path) -> Store:
    seeded = Store(tmp_path / "conveyor.db")
    async with open_broker(seeded.url) as broker:
        await broker.declare_queue(QueueSpec(QUEUE))
        await broker.publish_batch([Message(body, routing_key=QUEUE) for body in SEEDED])
    return seeded


def _listing(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


# names

BAD_NAMES = [
    pytest.param("a b", "rename it", id="space"),
    pytest.param("é", "rename it", id="non-ascii"),
    pytest.param("orders/eu", "rename it", id="slash"),
    pytest.param("", "non-empty string", id="empty"),
    pytest.param("x" * 256, "the limit is 255", id="256-chars"),
]

DECLARATIONS: dict[str, Callable[[Broker, str], Awaitable[None]]] = {
    "queue": lambda broker, name: broker.declare_queue(QueueSpec(name)),
    "exchange": lambda broker, name: broker.declare_exchange(ExchangeSpec(name)),
    "binding-exchange": lambda broker, name: broker.bind(Binding(name, QUEUE)),
    "binding-queue": lambda broker, name: broker.bind(Binding("amq.direct", name)),
    "alternate-exchange": lambda broker, name: broker.declare_exchange(
        ExchangeSpec("fallback", alternate_exchange=name)
    ),
}


SPECS: dict[str, Callable[[str], object]] = {
    "QueueSpec": QueueSpec,
    "ExchangeSpec": ExchangeSpec,
    "Binding.exchange": lambda name: Binding(name, QUEUE),
    "Binding.queue": lambda name: Binding("amq.direct", name),
}


@pytest.mark.parametrize(("bad", "advice"), BAD_NAMES)
@pytest.mark.parametrize("spec", sorted(SPECS))
def test_invalid_name_is_refused_when_the_spec_is_built(spec: str, bad: str, advice: str) -> None:
    with pytest.raises(ConfigError, match=advice):
        SPECS[spec](bad)


@pytest.mark.parametrize(("bad", "advice"), BAD_NAMES)
@pytest.mark.parametrize("declaration", sorted(DECLARATIONS))
async def test_invalid_name_raises_config_error_before_anything_is_written(
    store: Store, declaration: str, bad: str, advice: str
) -> None:
    before = store.digest()
    async with open_broker(store.url) as broker:
        with pytest.raises(ConfigError, match=advice):
            await DECLARATIONS[declaration](broker, bad)
        assert [spec.name for spec in await broker.list_queues()] == [QUEUE]
    assert store.digest() == before
    assert await store.bodies() == SEEDED


async def test_name_of_255_allowed_characters_is_accepted(store: Store) -> None:
    longest = "Az09_.:-" * 31 + "abcdefg"
    assert len(longest) == 255
    async with open_broker(store.url) as broker:
        await broker.declare_queue(QueueSpec(longest))
        await broker.declare_exchange(ExchangeSpec(longest))
        await broker.bind(Binding(longest, longest, routing_key="k"))
        assert await broker.publish(Message(b"x", routing_key="k"), exchange=longest) == 1


# message size

MIB = 1024 * 1024


async def test_message_over_the_default_1_mib_limit_raises_before_anything_is_written(
    store: Store,
) -> None:
    before = store.digest()
    async with open_broker(store.url) as broker:
        with pytest.raises(MessageTooLarge, match="raise max_message_size") as caught:
            await broker.publish(Message(b"x" * (MIB + 1), routing_key=QUEUE))
    assert (caught.value.size, caught.value.limit) == (MIB + 1, MIB)
    assert store.digest() == before
    async with open_broker(store.url) as broker:
        assert await broker.publish(Message(b"x" * MIB, routing_key=QUEUE)) == 1
    assert await store.bodies() == [*SEEDED, b"x" * MIB]


@pytest.mark.parametrize(
    ("message", "size"),
    [
        pytest.param(Message(b"x" * 1001, routing_key=QUEUE), 1001, id="body"),
        pytest.param(
            Message(b"x" * 990, routing_key=QUEUE, headers={"trace": "abcdef"}),
            990 + len('{"trace":"abcdef"}'),
            id="body-plus-headers",
        ),
    ],
)
async def test_message_over_a_configured_max_message_size_raises_message_too_large(
    store: Store, message: Message, size: int
) -> None:
    url = f"{store.url}?max_message_size=1000"
    before = store.digest()
    async with open_broker(url) as broker:
        with pytest.raises(MessageTooLarge, match="over the 1000-byte limit") as caught:
            await broker.publish(message)
    assert (caught.value.size, caught.value.limit) == (size, 1000)
    assert store.digest() == before
    async with open_broker(url) as broker:
        assert await broker.publish(Message(b"y" * 1000, routing_key=QUEUE)) == 1
    assert await store.bodies() == [*SEEDED, b"y" * 1000]


async def test_batch_with_one_message_too_large_stores_none_of_the_batch(store: Store) -> None:
    url = f"{store.url}?max_message_size=1000"
    batch = [Message(f"new-{i}".encode(), routing_key=QUEUE) for i in range(5)]
    batch[3] = Message(b"z" * 1001, routing_key=QUEUE)
    before = store.digest()
    async with open_broker(url) as broker:
        with pytest.raises(MessageTooLarge):
            await broker.publish_batch(batch)
        assert (await broker.queue_stats(QUEUE)).depth == len(SEEDED)
    assert store.digest() == before
    assert await store.bodies() == SEEDED


# routing


@pytest.mark.parametrize("mandatory", [False, True])
async def test_publish_to_a_missing_exchange_raises_exchange_not_found_and_stores_nothing(
    store: Store, mandatory: bool
) -> None:
    before = store.digest()
    async with open_broker(store.url) as broker:
        with pytest.raises(ExchangeNotFound, match="declare it first") as caught:
            await broker.publish_batch(
                [Message(b"lost?", routing_key=QUEUE)] * 2, exchange="missing", mandatory=mandatory
            )
    assert caught.value.exchange == "missing"
    assert store.digest() == before
    assert await store.bodies() == SEEDED


# files that are not Conveyor databases


def _write_text_file(path: Path) -> None:
    path.write_text("sku,quantity\nwidget,3\n")


def _write_other_programs_database(path: Path) -> None:
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        raw.execute("INSERT INTO notes (text) VALUES ('keep me')")
    raw.close()


def _write_other_programs_tagged_database(path: Path) -> None:
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA application_id = 1234")
    raw.close()


def _write_other_programs_versioned_empty_database(path: Path) -> None:
    """A program that stamps its schema version before it creates its tables."""
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 5")
    raw.close()


@pytest.mark.parametrize(
    ("write", "advice"),
    [
        pytest.param(_write_text_file, "not a SQLite database", id="text-file"),
        pytest.param(_write_other_programs_database, "another program", id="sqlite-with-tables"),
        pytest.param(_write_other_programs_tagged_database, "another program", id="foreign-app-id"),
        pytest.param(
            _write_other_programs_versioned_empty_database,
            "another program",
            id="foreign-user-version",
        ),
    ],
)
async def test_file_of_another_program_raises_not_a_conveyor_database_and_is_untouched(
    tmp_path: Path, write: Callable[[Path], None], advice: str
) -> None:
    path = tmp_path / "data.db"
    write(path)
    before, files = path.read_bytes(), _listing(tmp_path)
    with pytest.raises(NotAConveyorDatabase, match=f"{advice}.*another file"):
        async with open_broker(f"sqlite:///{path}") as broker:
            await broker.list_queues()
    assert path.read_bytes() == before
    assert _listing(tmp_path) == files


async def _grow(store: Store) -> None:
    """Give the store enough pages that damage in the middle hits real data."""
    async with open_broker(store.url) as broker:
        await broker.declare_queue(QueueSpec("bulk"))
        await broker.publish_batch([Message(b"b" * 300, routing_key="bulk")] * 300)


async def test_truncated_database_raises_not_a_conveyor_database_and_is_untouched(
    store: Store,
) -> None:
    await _grow(store)
    data = store.path.read_bytes()
    store.path.write_bytes(data[: len(data) // 2])
    before = store.digest()
    with pytest.raises(NotAConveyorDatabase, match=r"corrupt.*backup"):
        async with open_broker(store.url) as broker:
            await broker.queue_stats(QUEUE)
    assert store.digest() == before
    assert store.files() == ["conveyor.db"]


async def test_database_with_a_page_overwritten_raises_not_a_conveyor_database_and_is_untouched(
    store: Store,
) -> None:
    await _grow(store)
    with sqlite3.connect(store.path) as raw:
        (page_size,) = raw.execute("PRAGMA page_size").fetchone()
        (page_count,) = raw.execute("PRAGMA page_count").fetchone()
        (root,) = raw.execute("SELECT rootpage FROM sqlite_master WHERE name = 'meta'").fetchone()
    raw.close()
    assert 1 < root < page_count  # the page every operation reads, inside the file
    with store.path.open("r+b") as file:
        file.seek((root - 1) * page_size)
        file.write(b"\xa5" * page_size)
    before = store.digest()
    with pytest.raises(NotAConveyorDatabase, match=r"corrupt.*backup"):
        async with open_broker(store.url) as broker:
            await broker.queue_stats(QUEUE)
    assert store.digest() == before


async def test_database_from_a_newer_schema_raises_schema_too_new_and_is_untouched(
    store: Store,
) -> None:
    with sqlite3.connect(store.path) as raw:
        raw.execute("PRAGMA user_version = 99")
    raw.close()
    before = store.digest()
    with pytest.raises(SchemaTooNew, match=r"schema version 99.*upgrade Conveyor"):
        async with open_broker(store.url) as broker:
            await broker.queue_stats(QUEUE)
    assert store.digest() == before
    assert store.files() == ["conveyor.db"]


# locks


async def test_write_lock_held_past_lock_timeout_raises_database_locked_then_recovers(
    store: Store,
) -> None:
    url = f"{store.url}?lock_timeout=0.3"
    async with open_broker(url) as broker:
        holder = sqlite3.connect(store.path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            started = time.monotonic()
            with pytest.raises(DatabaseLocked, match="raise lock_timeout") as caught:
                await broker.publish(Message(b"blocked", routing_key=QUEUE))
            waited = time.monotonic() - started
            with pytest.raises(DatabaseLocked):
                await broker.receive(QUEUE)
        finally:
            holder.close()  # ends the transaction: the lock is released
        assert caught.value.timeout == 0.3
        assert 0.3 <= waited < 5, f"gave up after {waited:.2f}s, lock_timeout is 0.3s"
        assert await broker.publish(Message(b"after", routing_key=QUEUE)) == 1
    assert await store.bodies() == [*SEEDED, b"after"]


async def test_opening_a_file_locked_past_lock_timeout_raises_database_locked(
    tmp_path: Path,
) -> None:
    path = tmp_path / "new.db"
    path.touch()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(DatabaseLocked, match="stayed locked"):
            async with open_broker(f"sqlite:///{path}?lock_timeout=0.3"):
                pass
    finally:
        holder.close()
    assert path.stat().st_size == 0
    async with open_broker(f"sqlite:///{path}") as broker:
        await broker.declare_queue(QueueSpec(QUEUE))


# paths and URL options


async def test_directory_path_raises_config_error(tmp_path: Path) -> None:
    (tmp_path / "queues").mkdir()
    with pytest.raises(ConfigError, match=r"is a directory.*database file inside it"):
        async with open_broker(f"sqlite:///{tmp_path / 'queues'}"):
            pass
    assert _listing(tmp_path / "queues") == []


async def test_missing_parent_directory_raises_config_error_and_creates_nothing(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="does not exist; create it first"):
        async with open_broker(f"sqlite:///{tmp_path / 'missing' / 'conveyor.db'}"):
            pass
    assert _listing(tmp_path) == []


def test_unknown_url_option_raises_config_error_listing_the_valid_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="durabilty") as caught:
        open_broker(f"sqlite:///{tmp_path / 'conveyor.db'}?durabilty=fsync")
    for option in dataclasses.fields(EmbeddedOptions):
        assert option.name in str(caught.value)
    assert _listing(tmp_path) == []


@pytest.mark.parametrize(
    ("query", "advice"),
    [
        pytest.param("durability=sometimes", "one of fsync, normal, memory", id="durability"),
        pytest.param("lock_timeout=soon", "not a valid float", id="lock-timeout-text"),
        pytest.param("lock_timeout=-1", "lock_timeout must be >= 0", id="lock-timeout-negative"),
        pytest.param("poll_interval=0", "poll_interval must be > 0", id="poll-interval-zero"),
        pytest.param("max_message_size=0", "max_message_size must be >= 1", id="max-size-zero"),
        pytest.param("max_message_size=1.5", "not a valid int", id="max-size-fraction"),
        pytest.param("durability=fsync&durability=memory", "appears twice", id="repeated"),
    ],
)
def test_bad_url_option_value_raises_config_error(tmp_path: Path, query: str, advice: str) -> None:
    with pytest.raises(ConfigError, match=advice):
        open_broker(f"sqlite:///{tmp_path / 'conveyor.db'}?{query}")
    assert _listing(tmp_path) == []
