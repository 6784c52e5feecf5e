"""Waking receivers in other processes the moment work arrives.

A receiver with nothing to do opens a datagram socket, records its address in the
``waiters`` table in the same transaction that found the queue empty, and sleeps on the
socket. A producer reads the waiters of the queues it wrote to inside its own transaction
and, once committed, sends each a one-byte datagram. Because the record and the check
share a transaction, no wake-up can fall between them. A lost datagram only costs the
bounded poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Collection, Iterable
from pathlib import Path

from conveyor.brokers.embedded import topology

_ABSTRACT = sys.platform == "linux"


def _socket_address(address: str) -> str:
    # Linux's abstract namespace needs no file and vanishes with the process.
    return "\0" + address if _ABSTRACT else str(Path(tempfile.gettempdir()) / address)


class WakeSignal:
    """The socket one waiting receiver sleeps on."""

    def __init__(self) -> None:
        self.address = f"conveyor-{secrets.token_hex(8)}"
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._socket.bind(_socket_address(self.address))

    async def wait(self, longest: float) -> None:
        """Return when woken or after ``longest`` seconds, whichever comes first."""
        if longest > 0:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(longest):
                    await loop.sock_recv(self._socket, 16)
        with contextlib.suppress(BlockingIOError):
            while True:
                self._socket.recv(16)

    def close(self) -> None:
        self._socket.close()
        if not _ABSTRACT:
            Path(_socket_address(self.address)).unlink(missing_ok=True)


class Notifier:
    """Sends wake-ups; remembers receivers that have gone so their records can be removed."""

    def __init__(self) -> None:
        self._socket: socket.socket | None = None
        self._opening = threading.Lock()
        self.gone: set[str] = set()

    def notify(self, addresses: Iterable[str]) -> None:
        """Wake each address; callable from any thread (a blocking submit's too)."""
        sender = self._socket or self._open()
        for address in addresses:
            try:
                sender.sendto(b"!", _socket_address(address))
            except BlockingIOError:
                pass  # its buffer is full: it has wake-ups pending already
            except (ConnectionRefusedError, FileNotFoundError):
                self.gone.add(address)

    def _open(self) -> socket.socket:
        with self._opening:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            return self._socket

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def register(connection: sqlite3.Connection, address: str, queue_id: int) -> None:
    connection.execute(
        "INSERT OR REPLACE INTO waiters (address, queue_id) VALUES (?, ?)", (address, queue_id)
    )


def unregister(connection: sqlite3.Connection, addresses: Iterable[str]) -> None:
    connection.executemany("DELETE FROM waiters WHERE address = ?", [(a,) for a in addresses])


def version_and_waiters(
    connection: sqlite3.Connection, queue_ids: Collection[int]
) -> tuple[int, list[str]]:
    """The topology version and the receivers waiting on ``queue_ids``, in one statement."""
    if not queue_ids:
        return topology.version(connection), []
    rows = connection.execute(
        f"{topology.VERSION_QUERY.replace('value', 'value, NULL')} UNION ALL"
        f" SELECT NULL, address FROM waiters WHERE queue_id IN ({','.join('?' * len(queue_ids))})",
        tuple(queue_ids),
    ).fetchall()
    version = next(row[0] for row in rows if row[0] is not None)
    return version, [row[1] for row in rows if row[1] is not None]
