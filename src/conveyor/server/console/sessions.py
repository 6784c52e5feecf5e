"""Console sessions, CSRF tokens and the login throttle.

A session is a random id (256 bits) handed to the browser in an HttpOnly, SameSite=Strict
cookie; what it stands for stays here, in memory: its CSRF token, its age and its pending
notices. The API token never leaves the login form: the cookie is not derived from it, and
logging out (or a server restart) ends the session for good.

Every form POST carries the session's CSRF token, compared in constant time. The login form
has no session yet, so it carries a random value that must match a short-lived cookie set
with the form (the double-submit pattern).
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

SESSION_COOKIE = "conveyor_console"
LOGIN_COOKIE = "conveyor_console_login"
CSRF_FIELD = "csrf"

IDLE_TIMEOUT = 8 * 3600.0
"""Seconds a session may go unused before it ends."""
MAX_AGE = 24 * 3600.0
"""Seconds a session lasts at most, used or not."""
MAX_SESSIONS = 1000
"""Sessions kept at once; past that, the least recently used one ends."""
LOGIN_FORM_AGE = 3600
"""Seconds a login form stays valid."""


def random_token() -> str:
    return secrets.token_urlsafe(32)


def same(given: str | None, expected: str | None) -> bool:
    """Whether two secrets match, in time independent of where they differ."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass(slots=True)
class Notice:
    text: str
    kind: str = "ok"  # ok | error


@dataclass(slots=True)
class Session:
    id: str
    csrf: str
    created_at: float
    seen_at: float
    notices: list[Notice] = field(default_factory=list)

    def notify(self, text: str, kind: str = "ok") -> None:
        """A notice shown once, on the next page this session loads."""
        self.notices.append(Notice(text, kind))
        del self.notices[:-5]

    def take_notices(self) -> list[Notice]:
        notices, self.notices = self.notices, []
        return notices


class Sessions:
    """The console's sessions, by id, least recently used first."""

    def __init__(
        self,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        max_age: float = MAX_AGE,
        limit: int = MAX_SESSIONS,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_age = max_age
        self.limit = limit
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self) -> Session:
        now = time.time()
        self._expire(now)
        while len(self._sessions) >= self.limit:
            self._sessions.popitem(last=False)
        session = Session(random_token(), random_token(), now, now)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id (and mark it used), or None."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = time.time()
        if self._expired(session, now):
            del self._sessions[session_id]
            return None
        session.seen_at = now
        self._sessions.move_to_end(session_id)
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.seen_at > self.idle_timeout or now - session.created_at > self.max_age

    def _expire(self, now: float) -> None:
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if not self._expired(oldest, now):
                break
            self._sessions.popitem(last=False)


class LoginThrottle:
    """Slows a client down after ``failures`` wrong tokens within ``window`` seconds.

    Counted per client address, so that one guesser does not lock everyone else out. A
    slowed client's attempts are taken one at a time, each after a pause that grows with
    its failures (up to ``longest_pause``): guessing gets slow, while the right token is
    still accepted, never refused.
    """

    def __init__(
        self,
        failures: int = 10,
        window: float = 60.0,
        longest_pause: float = 5.0,
        clients: int = 10_000,
    ) -> None:
        self.failures = failures
        self.window = window
        self.longest_pause = longest_pause
        self.clients = clients
        self._failed: OrderedDict[str, deque[float]] = OrderedDict()
        self._turns: dict[str, asyncio.Lock] = {}

    def pause_for(self, client: str) -> float:
        """Seconds this client's next attempt waits before it is checked (0: none)."""
        now = time.monotonic()
        recent = [t for t in self._failed.get(client, ()) if now - t < self.window]
        excess = len(recent) - self.failures + 1
        return 0.0 if excess <= 0 else min(self.longest_pause, 0.5 * excess)

    @asynccontextmanager
    async def turn(self, client: str) -> AsyncIterator[None]:
        """One attempt of ``client`` at a time, after its pause."""
        lock = self._turns.setdefault(client, asyncio.Lock())
        try:
            async with lock:
                await asyncio.sleep(self.pause_for(client))
                yield
        finally:
            if not lock.locked() and self._turns.get(client) is lock:
                del self._turns[client]

    def failed(self, client: str) -> None:
        times = self._failed.pop(client, None) or deque(maxlen=self.failures * 4)
        times.append(time.monotonic())
        self._failed[client] = times
        while len(self._failed) > self.clients:
            self._failed.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._failed.pop(client, None)
