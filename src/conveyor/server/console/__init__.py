"""The web console: pages at ``/`` of the HTTP server, rendered there, with no front-end build.

``mount_console(server, app, settings)`` adds it to the server ``create_server`` made. Pages:
the overview (alerts, queues with their last hour drawn as charts, dead-letter counts), a
queue with its message browser, the dead-letter inspector (inspect, replay, purge), topics,
consumer groups with their lag, workers, and a job lookup; live panels refresh every few
seconds through a small script.

The console keeps its own doors: requests for its paths go straight to it, in front of the
API's bearer check (a browser cannot send the token with a link or a form). With a token
configured, every page needs a session opened by entering the token on the login page
(see ``sessions``); without one (loopback only), pages are open. Either way every form POST
must carry the session's CSRF token. Requests for any other path go on to the server
unchanged, bearer check included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.app import App
from conveyor.errors import ConveyorError
from conveyor.server.console import (
    auth,
    dead_letters,
    operations,
    overview,
    queues,
    streams,
)
from conveyor.server.console.web import Console, Forbidden, NotFound, console_of
from conveyor.server.errors import status_of
from conveyor.server.security import BearerAuth, BodyLimit
from conveyor.server.settings import ServerSettings
from conveyor.server.state import ServerState

__all__ = ["mount_console"]

logger = logging.getLogger("conveyor.server.console")

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def mount_console(server: FastAPI, app: App, settings: ServerSettings) -> None:
    """Serve the console from ``server``, at ``/``.

    Call it after the server's middleware is installed (at the end of ``create_server``):
    the console answers its own paths in front of that middleware. A second call does
    nothing. Queue history is sampled in the background while the server runs.
    """
    if getattr(server.state, "console", None) is not None:
        return
    if not any(getattr(entry, "cls", None) is BearerAuth for entry in server.user_middleware):
        raise RuntimeError(
            "mount_console() must be called after the server's middleware is added (at the "
            "end of create_server): the console answers its paths in front of it"
        )
    state = getattr(server.state, "conveyor", None)
    if not isinstance(state, ServerState):
        state = ServerState(app, settings)
    console = Console(app, settings, state)
    web = console_app(console)
    entry = SecurityHeaders(BodyLimit(web, limit=settings.max_body_bytes))
    server.add_middleware(ConsoleDispatch, console=entry, sections=sections())
    sample_while_serving(server, console)
    server.state.console = console


ROUTERS = (
    auth.router,
    overview.router,
    queues.router,
    dead_letters.router,
    streams.router,
    operations.router,
)


def console_app(console: Console) -> FastAPI:
    web = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    web.state.console = console
    for router in ROUTERS:
        web.include_router(router)
    install_error_pages(web)
    return web


def sections() -> frozenset[str]:
    """The first path segments of the console's pages ("" for the overview at ``/``); the
    server keeps the others (``api``, ``metrics``, ``health``, ``docs``...)."""
    return frozenset(
        str(getattr(route, "path", "")).lstrip("/").split("/", 1)[0]
        for router in ROUTERS
        for route in router.routes
    )


class ConsoleDispatch:
    """Sends requests whose first path segment is the console's to the console."""

    def __init__(self, app: ASGIApp, *, console: ASGIApp, sections: frozenset[str]) -> None:
        self.app = app
        self.console = console
        self.sections = sections

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            segment = str(scope.get("path", "")).lstrip("/").split("/", 1)[0]
            if segment in self.sections:
                await self.console(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every console response (those it does not set itself)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, sending)


def install_error_pages(web: FastAPI) -> None:
    """Errors as console pages (the panel refresh gets them as JSON)."""

    @web.exception_handler(Forbidden)
    async def forbidden(request: Request, error: Forbidden) -> Response:
        return console_of(request).error_page(request, 403, "Forbidden", str(error))

    @web.exception_handler(NotFound)
    async def not_found(request: Request, error: NotFound) -> Response:
        return console_of(request).error_page(request, 404, "Not found", str(error))

    @web.exception_handler(ConveyorError)
    async def conveyor_error(request: Request, error: ConveyorError) -> Response:
        status = status_of(error)
        title = "Not found" if status == 404 else "The broker refused"
        return console_of(request).error_page(request, status, title, str(error))

    @web.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        message = f"There is no console page at {request.url.path}."
        if error.status_code != 404:
            message = str(error.detail)
        title = "Not found" if error.status_code == 404 else "Refused"
        return console_of(request).error_page(request, error.status_code, title, message)

    @web.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        return console_of(request).error_page(request, 422, "Bad request", "Unreadable request.")

    @web.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> Response:
        logger.error("console: unexpected error on %s", request.url.path, exc_info=error)
        message = f"Unexpected {type(error).__name__}; the server log has the details."
        return console_of(request).error_page(request, 500, "Internal error", message)


def sample_while_serving(server: FastAPI, console: Console) -> None:
    """Run the history sampler for as long as the server's lifespan lasts."""
    inner = server.router.lifespan_context

    @asynccontextmanager
    async def lifespan(owner: Any) -> AsyncIterator[Any]:
        async with inner(owner) as value:
            sampler = asyncio.create_task(console.history.run(), name="console-history")
            try:
                yield value
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler

    server.router.lifespan_context = lifespan
