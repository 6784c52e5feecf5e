"""Helpers for the console tests: a client of create_server with the console mounted, a
login, and a task queue whose failing task the real worker turns into dead letters."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from conveyor.app import App
from conveyor.errors import PermanentError
from conveyor.server import ServerSettings, create_server
from conveyor.server.console import mount_console
from conveyor.worker.consume import Worker

TOKEN = "console-token-0123456789"
SCRIPT = "<script>alert(1)</script>"


def register(app: App) -> None:
    @app.task(name="mail.send", queue="mail")
    def send(to: str) -> dict[str, str]:
        return {"sent": to}

    @app.task(name="mail.bounce", queue="mail", max_retries=0)
    def bounce(to: str) -> None:
        raise PermanentError(f"{SCRIPT} {to} bounced")


async def dead_letter(app: App) -> str:
    """Run a failing task through the real worker: its job id, now a dead letter."""
    job = await app.get_task("mail.bounce").adelay("ada@example.com")
    await Worker(app, queues=["mail"], concurrency=1).run_until_idle()
    assert (await app.ajob(job.id)).status.value == "dead"
    return job.id


@asynccontextmanager
async def console(app: App, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh server with the console (token TOKEN, no caching unless given)."""
    config = ServerSettings(**{"token": TOKEN, "cache_seconds": 0.0, **settings})
    server = create_server(app, config)
    mount_console(server, app, config)  # does nothing once create_server mounts it itself
    transport = httpx.ASGITransport(app=server)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield client


def hidden(page: str, name: str) -> str:
    match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)">', page)
    assert match, f"no hidden field {name!r} in the page"
    return match.group(1)


async def login(client: httpx.AsyncClient, token: str = TOKEN) -> httpx.Response:
    form = await client.get("/login")
    assert form.status_code == 200
    fields = {"csrf": hidden(form.text, "csrf"), "token": token, "next": hidden(form.text, "next")}
    return await client.post("/login", data=fields)


async def logged_in(client: httpx.AsyncClient) -> str:
    """Log in; the session's CSRF token."""
    assert (await login(client)).status_code == 303
    return hidden((await client.get("/")).text, "csrf")


async def page(client: httpx.AsyncClient, path: str) -> str:
    response = await client.get(path)
    assert response.status_code == 200, (path, response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("text/html")
    return response.text
