"""Waking ``wait_for_job`` when its job finishes, without polling.

Storing a finished outcome publishes on the job's channel. Each store holds one Pub/Sub
connection, subscribed to the channels of the jobs someone waits for, and wakes those
waiters; they read the record again rather than trust the message. A waiter counts as
watching only once the server has confirmed its subscription, so an outcome stored after
that is never missed, and one stored before shows in the read that follows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio
import redis.exceptions
from redis.asyncio.client import PubSub

_IDLE = 1.0


class _Channel:
    """One subscribed channel: confirmed once the server says so, and who to wake."""

    __slots__ = ("confirmed", "wakers")

    def __init__(self) -> None:
        self.confirmed = asyncio.Event()
        self.wakers: set[asyncio.Event] = set()


class _Session:
    """One Pub/Sub connection and its channels; dead for good once the connection fails,
    after which waiters read the record again and a new session takes over."""

    def __init__(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub
        self.sending = asyncio.Lock()  # redis-py would open a connection per concurrent first use
        self.channels: dict[str, _Channel] = {}
        self.alive = True
        self.listener: asyncio.Task[None] | None = None

    def end(self) -> None:
        self.alive = False
        for channel in self.channels.values():
            channel.confirmed.set()
            for waker in channel.wakers:
                waker.set()
        self.channels.clear()


class Watch:
    """A waiter's subscription to its job's channel."""

    def __init__(self, session: _Session, waker: asyncio.Event) -> None:
        self._session = session
        self._waker = waker

    @property
    def alive(self) -> bool:
        """False once the connection failed: nothing will wake this waiter any more."""
        return self._session.alive

    async def wait(self, timeout: float) -> None:
        """Until the job may have finished, or ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # wait_for may swallow a cancel (3.11)
                await self._waker.wait()
        self._waker.clear()


class Watcher:
    """The store's Pub/Sub connection, opened when the first waiter comes."""

    def __init__(self, client: redis.asyncio.Redis, confirm_timeout: float) -> None:
        self._client = client
        self._confirm_timeout = confirm_timeout
        self._session: _Session | None = None

    @asynccontextmanager
    async def watching(
        self, channel: str, patience: float, waker: asyncio.Event | None = None
    ) -> AsyncIterator[Watch]:
        """Subscribed to ``channel`` for the duration of the block, from the server's
        confirmation on, or from ``patience`` seconds if that comes first: a waiter whose
        time is up only reads the record once more. Watches that share a ``waker`` wake
        on a message to any of their channels.

        Raises redis-py's errors if the connection cannot be opened. A server that does not
        confirm within the confirmation timeout ends the session for every waiter.
        """
        session = self._current()
        waker = waker or asyncio.Event()
        entry = session.channels.get(channel)
        if entry is None:
            entry = session.channels[channel] = _Channel()
            entry.wakers.add(waker)
            try:
                async with session.sending:
                    if session.alive:
                        await session.pubsub.subscribe(channel)
            except BaseException:
                await self._end(session)
                raise
            if session.listener is None and session.alive:
                session.listener = asyncio.create_task(self._listen(session))
        else:
            entry.wakers.add(waker)
        try:
            try:
                async with asyncio.timeout(min(patience, self._confirm_timeout)):
                    await entry.confirmed.wait()
            except TimeoutError:
                if patience >= self._confirm_timeout:
                    await self._end(session)
            yield Watch(session, waker)
        finally:
            entry.wakers.discard(waker)
            if not entry.wakers and entry.confirmed.is_set():
                await self._unsubscribe(session, channel, entry)

    async def close(self) -> None:
        if self._session is not None:
            await self._end(self._session)

    def _current(self) -> _Session:
        if self._session is None or not self._session.alive:
            self._session = _Session(self._client.pubsub())
        return self._session

    async def _listen(self, session: _Session) -> None:
        try:
            while session.alive:
                message = await session.pubsub.get_message(timeout=_IDLE)
                if message is not None:
                    await self._dispatch(session, message)
        except (redis.exceptions.RedisError, OSError):
            await self._end(session)

    async def _dispatch(self, session: _Session, message: dict[str, Any]) -> None:
        name = message.get("channel")
        if not isinstance(name, str):
            return
        entry = session.channels.get(name)
        kind = message["type"]
        if kind == "message" and entry is not None:
            for waker in entry.wakers:
                waker.set()
        elif kind == "subscribe" and entry is None:
            await self._send_unsubscribe(session, name)
        elif kind == "subscribe" and entry is not None and not entry.confirmed.is_set():
            entry.confirmed.set()
            if not entry.wakers:
                await self._unsubscribe(session, name, entry)
        elif kind == "subscribe" and entry is not None:
            for waker in entry.wakers:  # subscribed again after a reconnect: look again
                waker.set()

    async def _unsubscribe(self, session: _Session, name: str, entry: _Channel) -> None:
        """Only once confirmed, so that no late confirmation is taken for a new subscriber's."""
        if session.channels.get(name) is entry:
            del session.channels[name]
            await self._send_unsubscribe(session, name)

    async def _send_unsubscribe(self, session: _Session, name: str) -> None:
        if not session.alive:
            return
        try:
            async with session.sending:
                if session.alive:
                    await session.pubsub.unsubscribe(name)
        except (redis.exceptions.RedisError, OSError):
            await self._end(session)

    async def _end(self, session: _Session) -> None:
        if not session.alive:
            return
        session.end()
        listener = session.listener
        if listener is not None and listener is not asyncio.current_task():
            listener.cancel()
            await asyncio.wait([listener])
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await session.pubsub.aclose()  # type: ignore[no-untyped-call]
