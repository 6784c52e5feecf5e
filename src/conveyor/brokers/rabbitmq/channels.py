"""AMQP channels that come back: after the server closed one, or the connection dropped.

RabbitMQ answers a refused command (a redeclare with other arguments, a missing queue) by
closing the channel it came on. Channels here are plain, not aio-pika's self-restoring
ones: a restoring channel races the code that caught the error, and would re-declare
queues it once declared even after they were deleted. Instead a ``Slot`` forgets a
closed channel and opens a fresh one for the next command, waiting for the robust
connection to come back if it is away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aiormq.abc import AbstractChannel

from conveyor.brokers.rabbitmq import failures
from conveyor.brokers.rabbitmq.options import Endpoint

T = TypeVar("T")

RETRY_PAUSE = 0.05
_LOST: tuple[type[BaseException], ...] = (TimeoutError, *failures.CONNECTION_ERRORS)


class Opener:
    """Opens channels on the broker's connection, within ``timeout`` of asking."""

    def __init__(
        self, connection: AbstractRobustConnection, endpoint: Endpoint, timeout: float
    ) -> None:
        self.connection = connection
        self.endpoint = endpoint
        self.timeout = timeout

    async def open(self, *, confirms: bool) -> tuple[aio_pika.Channel, AbstractChannel]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        failure: BaseException | None = None
        while not self.connection.is_closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    await self.connection.ready()
                    channel = aio_pika.Channel(self.connection, publisher_confirms=confirms)
                    await channel.initialize(timeout=remaining)
                    return channel, await channel.get_underlay_channel()
            except TimeoutError as exc:
                failure = exc
                break
            except failures.CONNECTION_ERRORS as exc:
                failure = exc
                await asyncio.sleep(RETRY_PAUSE)
        raise failures.unavailable(self.endpoint, failure, "opening a channel")


class Slot:
    """One channel for one job (topology, publishing, a queue's consumer), kept open."""

    def __init__(self, opener: Opener, *, confirms: bool = False) -> None:
        self._opener = opener
        self._confirms = confirms
        self._wrapper: aio_pika.Channel | None = None
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()

    @property
    def current(self) -> AbstractChannel | None:
        """The open channel, if there is one (never a closed one)."""
        if self._channel is not None and self._channel.is_closed:
            self.discard()
        return self._channel

    async def get(self) -> AbstractChannel:
        async with self._lock:
            channel = self.current
            if channel is None:
                self._wrapper, channel = await self._opener.open(confirms=self._confirms)
                self._channel = channel
            return channel

    def discard(self) -> None:
        """Forget the channel (the server closed it, or it is no longer wanted)."""
        wrapper, self._wrapper, self._channel = self._wrapper, None, None
        if wrapper is not None and not wrapper.is_closed:
            task = asyncio.get_running_loop().create_task(_quietly_close(wrapper))
            _closing.add(task)
            task.add_done_callback(_closing.discard)

    async def close(self) -> None:
        wrapper, self._wrapper, self._channel = self._wrapper, None, None
        if wrapper is not None:
            await _quietly_close(wrapper)

    async def run(self, command: Callable[[AbstractChannel], Awaitable[T]], doing: str) -> T:
        """Run ``command`` on this slot's channel, translating what can go wrong.

        A refusal closes the channel and raises its Conveyor error; the next command gets
        a new channel. A failure of the connection retries once on a new channel, after
        the connection is back: commands sent through here are safe to repeat (declares
        and lookups are idempotent; a ``basic.get`` whose answer was lost was requeued
        with the connection; a repeated purge or delete only finds less to count).
        """
        for attempt in (1, 2):
            channel = await self.get()
            try:
                async with asyncio.timeout(self._opener.timeout):
                    return await command(channel)
            except failures.REFUSALS as exc:
                self.discard()
                raise failures.refusal(exc) from None
            except _LOST as exc:
                self.discard()
                if attempt == 2 or isinstance(exc, TimeoutError):
                    raise failures.unavailable(self._opener.endpoint, exc, doing) from None
            except asyncio.CancelledError as exc:
                if cancelled_by_caller():
                    raise
                self.discard()
                if attempt == 2:
                    raise failures.unavailable(self._opener.endpoint, exc, doing) from None
        raise AssertionError("unreachable")


def cancelled_by_caller() -> bool:
    """True when this task is being cancelled, not just a future the library cancelled.

    aiormq cancels the futures of pending commands when their connection drops; that
    arrives as CancelledError too, but the task itself is not being cancelled.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


_closing: set[asyncio.Task[None]] = set()


async def _quietly_close(wrapper: aio_pika.Channel) -> None:
    try:
        with contextlib.suppress(Exception):
            await wrapper.close()
    except asyncio.CancelledError:
        if cancelled_by_caller():
            raise
