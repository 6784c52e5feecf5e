"""Opening, validating and migrating the SQLite file, and running transactions on it.

Transactions are short synchronous functions run on the caller's event loop: SQLite work
takes microseconds, and a thread hop per operation would cost more than the work. Waiting
for another process's write lock happens in ``asyncio.sleep`` between attempts, never
inside SQLite, so a busy file does not stall the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from conveyor.brokers.embedded.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from conveyor.errors import (
    ConfigError,
    DatabaseError,
    DatabaseLocked,
    NotAConveyorDatabase,
    SchemaTooNew,
)

T = TypeVar("T")
log = logging.getLogger("conveyor.embedded")

SQLITE_HEADER = b"SQLite format 3\x00"
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class Durability(StrEnum):
    """What a confirmed publish survives."""

    FSYNC = "fsync"  # power loss: the WAL is synced on every commit
    NORMAL = "normal"  # a crash of any process: the OS holds what was committed
    MEMORY = "memory"  # nothing is synced; the OS writes when it likes


_SYNCHRONOUS = {Durability.FSYNC: "FULL", Durability.NORMAL: "NORMAL", Durability.MEMORY: "OFF"}


class _Busy(Exception):
    """The write lock is held elsewhere: back off and try the whole transaction again."""


class _Backoff:
    """Pauses between attempts at a transaction while the file is busy, growing from
    0.2 ms to 10 ms; past ``lock_timeout`` the attempt fails with DatabaseLocked."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.deadline = 0.0
        self.next = 0.0002

    def pause(self) -> float:
        now = time.monotonic()
        if not self.deadline:
            self.deadline = now + self.database.lock_timeout
        elif now > self.deadline:
            raise DatabaseLocked(self.database.label, self.database.lock_timeout) from None
        pause, self.next = self.next, min(self.next * 2, 0.01)
        return pause


class Database:
    """One connection to a Conveyor store, shared safely by the threads of one process."""

    def __init__(self, path: str | None, *, durability: Durability, lock_timeout: float) -> None:
        self.path = path
        self.label = path or ":memory:"
        self.durability = durability
        self.lock_timeout = lock_timeout
        self._lock = threading.Lock()
        self._file: tuple[int, int] | None = None
        self.connection = self._open()

    def _open(self) -> sqlite3.Connection:
        if self.path is None:
            connection = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            self._initialize(connection)
            return connection
        _check_path(self.path, read_header=not _already_open(self.path))
        created = not os.path.exists(self.path)
        try:
            connection = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=0
            )
        except sqlite3.Error as exc:
            raise DatabaseError(self.path, f"cannot open {self.path}: {exc}") from exc
        try:
            self._initialize(connection)
        except BaseException:
            connection.close()
            raise
        self._file = _register_open(self.path)
        if created:
            log.warning("created a new, empty Conveyor database at %s", self.path)
        return connection

    def _initialize(self, connection: sqlite3.Connection) -> None:
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                self._validate_and_migrate(connection)
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode not in _BUSY_CODES or time.monotonic() > deadline:
                    raise self._translate(exc) from exc
                time.sleep(0.005)
            except sqlite3.DatabaseError as exc:
                raise self._translate(exc) from exc

    def _validate_and_migrate(self, connection: sqlite3.Connection) -> None:
        # one snapshot: another process may be creating the schema of a new file meanwhile
        connection.execute("BEGIN")
        try:
            application_id = connection.execute("PRAGMA application_id").fetchone()[0]
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            connection.execute("COMMIT")
        if application_id != APPLICATION_ID:
            if tables or application_id or version:
                raise NotAConveyorDatabase(
                    self.label,
                    f"{self.label} is a SQLite database of another program, not a Conveyor "
                    "store; it was left untouched. Point the broker URL at another file",
                )
        elif version > SCHEMA_VERSION:
            raise SchemaTooNew(
                self.label,
                f"{self.label} has schema version {version}, newer than this Conveyor's "
                f"{SCHEMA_VERSION}; upgrade Conveyor to use it (the file was left untouched)",
            )
        if self.path is not None:
            connection.execute("PRAGMA journal_mode = WAL")
        connection.execute(f"PRAGMA synchronous = {_SYNCHRONOUS[self.durability]}")
        # The lists a lease, an ack or a settlement works through (id IN (...)) become
        # temporary tables; kept in memory, they cost no temporary file per statement.
        connection.execute("PRAGMA temp_store = MEMORY")
        if application_id == APPLICATION_ID and version == SCHEMA_VERSION:
            return
        connection.execute("BEGIN IMMEDIATE")
        try:
            current = connection.execute("PRAGMA user_version").fetchone()[0]
            for step in MIGRATIONS[current:]:
                for statement in step:
                    connection.execute(statement)
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    async def write(self, transaction: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``transaction`` under the write lock, retrying it whole while the file is busy.

        ``transaction`` must only touch the database: it may run more than once.
        """
        return await self._run(transaction, "BEGIN IMMEDIATE")

    async def read(self, transaction: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``transaction`` on one consistent snapshot, without the write lock."""
        return await self._run(transaction, "BEGIN")

    def write_blocking(self, transaction: Callable[[sqlite3.Connection], T]) -> T:
        """``write`` for a thread without an event loop: it sleeps while the file is busy."""
        backoff = _Backoff(self)
        while True:
            try:
                return self.run_now(transaction, "BEGIN IMMEDIATE")
            except _Busy:
                time.sleep(backoff.pause())

    async def _run(self, transaction: Callable[[sqlite3.Connection], T], begin: str) -> T:
        backoff = _Backoff(self)
        while True:
            try:
                return self.run_now(transaction, begin)
            except _Busy:
                await asyncio.sleep(backoff.pause())

    def run_now(self, transaction: Callable[[sqlite3.Connection], T], begin: str) -> T:
        """One attempt at a transaction; raises _Busy if the lock is held elsewhere."""
        connection = self.connection
        with self._lock:
            try:
                connection.execute(begin)
                try:
                    result = transaction(connection)
                    connection.execute("COMMIT")
                except BaseException:
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode in _BUSY_CODES:
                    raise _Busy from exc
                raise self._translate(exc) from exc
            except sqlite3.DatabaseError as exc:
                raise self._translate(exc) from exc
            return result

    def _translate(self, exc: sqlite3.Error) -> Exception:
        if isinstance(exc, sqlite3.OperationalError) and exc.sqlite_errorcode in _BUSY_CODES:
            return DatabaseLocked(self.label, self.lock_timeout)
        code = getattr(exc, "sqlite_errorcode", None)
        if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
            return NotAConveyorDatabase(
                self.label,
                f"{self.label} is corrupt or not a database ({exc}); it was left untouched. "
                "Restore it from a backup, or try `sqlite3 FILE .recover`",
            )
        return DatabaseError(self.label, f"{self.label}: {exc}")

    def close(self) -> None:
        with self._lock:
            self.connection.close()
            if self._file is not None:
                _open_files[self._file] -= 1
                if not _open_files[self._file]:
                    del _open_files[self._file]
                self._file = None


# Database files this process holds open, by (device, inode), with how many connections.
# Closing *any* descriptor of a file drops every POSIX lock this process holds on it, the
# locks of SQLite's own connections included: another process could then take the WAL for
# unused and delete it under us. So a file already open here is never opened again with
# open() to read its header; SQLite already checked it when the first connection opened it.
_open_files: dict[tuple[int, int], int] = {}


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _already_open(path: str) -> bool:
    return _file_id(path) in _open_files


def _register_open(path: str) -> tuple[int, int] | None:
    file = _file_id(path)
    if file is not None:
        _open_files[file] = _open_files.get(file, 0) + 1
    return file


def _check_path(path: str, *, read_header: bool = True) -> None:
    """Refuse paths that cannot hold a store before SQLite creates or touches anything."""
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"{path} is a directory; give the path of a database file inside it")
    if not file.parent.is_dir():
        raise ConfigError(f"directory {file.parent} does not exist; create it first")
    if read_header and file.exists() and file.stat().st_size > 0:
        try:
            with open(file, "rb") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise DatabaseError(path, f"cannot read {path}: {exc}") from exc
        if header != SQLITE_HEADER:
            raise NotAConveyorDatabase(
                path,
                f"{path} is not a SQLite database (so not a Conveyor store); it was left "
                "untouched. Point the broker URL at another file",
            )
    elif file.exists() and not os.access(file, os.W_OK):
        raise DatabaseError(path, f"{path} is not writable; fix its permissions")
