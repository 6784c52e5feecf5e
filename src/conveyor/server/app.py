"""``create_server(app, settings)``: the FastAPI application of ``conveyor serve``.

Layout: the JSON API under ``/api``, ``/metrics`` and ``/health`` at the top, the OpenAPI
document at ``/openapi.json`` with its pages at ``/docs``; the rest of the namespace is left
for the web console. The server is a client of the App and the Broker interface only.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI

from conveyor import __version__
from conveyor.app import App
from conveyor.errors import ConveyorError
from conveyor.server import api_dead_letters, api_jobs, api_queues, api_streams, health, metrics
from conveyor.server.console import mount_console
from conveyor.server.errors import install_error_handlers
from conveyor.server.security import BearerAuth, BodyLimit, TrustedHosts, bearer
from conveyor.server.settings import ServerSettings
from conveyor.server.state import ServerState

logger = logging.getLogger("conveyor.server")

DESCRIPTION = """\
Enqueue tasks and follow jobs, publish messages and produce records, look into queues,
exchanges, topics, consumer groups, workers and dead letters.

Mutating requests (POST, PUT, DELETE) need the server's token as `Authorization: Bearer
<token>`; so does every request when the server listens beyond loopback. Lists take `limit`
and `offset` and answer `{"items": [...], "total": N, "limit": L, "offset": O}`. Errors
answer `{"error": {"type": ..., "message": ...}}`.
"""


def create_server(app: App, settings: ServerSettings | None = None) -> FastAPI:
    """The HTTP server for ``app``; raises ConfigError for settings it must not run with."""
    settings = settings or ServerSettings()
    settings.check()

    state = ServerState(app, settings)

    @asynccontextmanager
    async def lifespan(server: FastAPI) -> AsyncIterator[None]:
        logger.info(
            "conveyor %s server for broker %s on %s:%d",
            __version__,
            app.broker_location,
            settings.host,
            settings.port,
        )
        try:
            await (await app.abroker()).ping()
        except ConveyorError as error:
            logger.warning("the broker cannot be reached (%s); /health reports down", error)
        try:
            yield
        finally:
            await state.close()

    server = FastAPI(
        title="Conveyor", version=__version__, description=DESCRIPTION, lifespan=lifespan
    )
    server.state.conveyor = state
    install_error_handlers(server)
    secured = [Depends(bearer)]  # documents the scheme; BearerAuth enforces it
    api = APIRouter(prefix="/api", dependencies=secured)
    for module in (api_jobs, api_queues, api_dead_letters, api_streams):
        api.include_router(module.router)
    server.include_router(api)
    server.include_router(metrics.router, dependencies=secured)
    server.include_router(health.router, dependencies=secured)
    # The last added runs first: authenticate before reading any body.
    server.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    server.add_middleware(
        BearerAuth, token=settings.token, token_for_reads=settings.token_for_reads
    )
    mount_console(server, app, settings)  # browsers log in instead of sending the token
    server.add_middleware(TrustedHosts, hosts=settings.trusted_hosts)  # first of all
    return server
