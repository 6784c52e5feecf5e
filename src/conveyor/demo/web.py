"""The demo's HTTP server: Conveyor's API and console, plus the campaign's own endpoint."""

from __future__ import annotations

from typing import Any

import uvicorn
from fastapi import Body

from conveyor.app import App
from conveyor.demo import newsletter
from conveyor.server.app import create_server
from conveyor.server.settings import ServerSettings


def build(app: App, port: int, token: str) -> Any:
    server = create_server(app, ServerSettings(port=port, token=token))

    @server.post("/send-newsletter", status_code=202)
    async def send_newsletter(emails: int = Body(10_000, embed=True)) -> dict[str, Any]:
        """Queue one email job per reader, in one batch: the answer comes back at once."""
        calls: list[tuple[tuple[str, ...], dict[str, Any]]] = [
            ((to, "Conveyor weekly", f"Hello {to}, here is this week's news."), {})
            for to in newsletter.recipients(emails)
        ]
        jobs = await newsletter.send_email.asend_many(calls)
        return {"queued": len(jobs), "first_job": jobs[0].id if jobs else None}

    return server


def http_server(app: App, port: int, token: str) -> uvicorn.Server:
    """An uvicorn server to ``serve()``; set ``should_exit`` to stop it cleanly."""
    config = uvicorn.Config(
        build(app, port, token), host="127.0.0.1", port=port, log_level="warning"
    )
    return uvicorn.Server(config)
