"""Bearer-token authentication and the request body limit, as ASGI middleware.

Both sit in front of every route (the API, /metrics, /health, the docs and whatever is added
later), so no endpoint can forget them. Mutating methods always need the token; reads need
it too when the server listens beyond loopback. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac

from fastapi.security import HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.server.errors import error_bytes

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

bearer = HTTPBearer(
    auto_error=False,
    description="The server's API token (CONVEYOR_API_TOKEN or --token-file).",
)
"""Declares the scheme in the OpenAPI document; BearerAuth does the checking."""


async def send_error(send: Send, status: int, kind: str, message: str, **headers: str) -> None:
    body = error_bytes(kind, message)
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


class BearerAuth:
    """401 unless the request carries ``Authorization: Bearer <token>`` where it must."""

    def __init__(self, app: ASGIApp, *, token: str | None, token_for_reads: bool) -> None:
        self.app = app
        self.token = token.encode() if token is not None else None
        self.token_for_reads = token_for_reads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        if (self.token_for_reads or method not in SAFE_METHODS) and not self._authorized(scope):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            challenge = {"WWW-Authenticate": 'Bearer realm="conveyor"'}
            await send_error(send, 401, "Unauthorized", self._problem(scope, method), **challenge)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        if self.token is None:
            return False
        scheme, _, credentials = (_header(scope, b"authorization") or b"").partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(credentials.strip(), self.token)

    def _problem(self, scope: Scope, method: str) -> str:
        if self.token is None:
            return (
                f"{method} needs an API token and this server has none: start it with "
                "CONVEYOR_API_TOKEN set or with --token-file"
            )
        if _header(scope, b"authorization") is None:
            return "missing API token: send the header 'Authorization: Bearer <token>'"
        return "the API token is wrong"


def _host_name(authority: str) -> str:
    """``example.org:8000`` -> ``example.org``; ``[::1]:8000`` -> ``::1``."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[1:].partition("]")[0]
    return authority.rpartition(":")[0] if authority.count(":") == 1 else authority


class TrustedHosts:
    """400 for a Host the server does not answer to, and 403 for a mutating request a web
    page of another origin sent: together they keep a page elsewhere from driving a server
    on loopback (DNS rebinding, forms posted across sites), with or without a token."""

    def __init__(self, app: ASGIApp, *, hosts: frozenset[str] | None) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = (_header(scope, b"host") or b"").decode("latin-1")
        if self.hosts is not None and _host_name(host) not in self.hosts:
            await send_error(
                send,
                400,
                "BadHost",
                f"this server does not answer to the host {host[:100]!r}; add it to "
                "CONVEYOR_ALLOWED_HOSTS (or --allowed-host) if it is one of its names",
            )
            return
        origin = _header(scope, b"origin")
        if scope.get("method", "GET") not in SAFE_METHODS and origin is not None:
            scheme, _, authority = origin.decode("latin-1").partition("://")
            if authority.lower() != host.lower() or scheme not in ("http", "https"):
                await send_error(
                    send, 403, "Forbidden", "a request from another origin may not change data"
                )
                return
        await self.app(scope, receive, send)


class _TooLarge(Exception):
    pass


class BodyLimit:
    """413 for a request body over ``limit`` bytes, declared or streamed.

    The body is read here, up to the limit, and handed on whole: the routes behind never
    see an oversized body, however it was sent.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        try:
            if declared is not None and declared.isdigit() and int(declared) > self.limit:
                raise _TooLarge
            body = await self._read(receive)
        except _TooLarge:
            await send_error(send, 413, "PayloadTooLarge", self._message(), Connection="close")
            return
        if body is None:  # the client went away
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _message(self) -> str:
        return f"the request body is over the server's limit of {self.limit} bytes"
