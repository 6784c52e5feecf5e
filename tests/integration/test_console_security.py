"""The web console's doors, through ASGI: login with the server's token, sessions, CSRF on
every form, open pages without a token, response headers, and how it is mounted."""

from __future__ import annotations

import time

import httpx
import pytest
from fastapi import FastAPI

from conveyor.app import App
from conveyor.server import ServerSettings, create_server
from conveyor.server.console import mount_console
from conveyor.server.console.sessions import LOGIN_COOKIE, SESSION_COOKIE
from tests.integration.console_support import (
    TOKEN,
    console,
    dead_letter,
    hidden,
    logged_in,
    login,
    page,
    register,
)

PAGES = ["/", "/queues/mail", "/dead-letters", "/dead-letters/mail", "/topics", "/groups",
         "/workers", "/jobs"]  # fmt: skip


async def test_every_page_needs_a_login_when_a_token_is_configured(app: App) -> None:
    register(app)
    await dead_letter(app)
    async with console(app) as client:
        for path in PAGES:
            response = await client.get(path)
            assert response.status_code == 303, path
            target = response.headers["location"]
            assert target.startswith("/login"), target
        deep = await client.get("/queues/mail")
        assert deep.headers["location"] == "/login?next=%2Fqueues%2Fmail"
        refresh = await client.get("/", headers={"X-Console-Panels": "1"})
        assert refresh.status_code == 401
        # the console leaves the server's own paths alone
        assert (await client.get("/api/queues")).status_code == 200
        assert (await client.get("/health")).status_code == 200
        assert (await client.post("/api/queues/mail/messages", json={"body": 1})).status_code == 401


async def test_login_opens_a_session_without_ever_sending_the_token_back(app: App) -> None:
    async with console(app) as client:
        form = await client.get("/login?next=/workers")
        assert "HttpOnly" in form.headers["set-cookie"]
        fields = {"csrf": hidden(form.text, "csrf"), "token": TOKEN, "next": "/workers"}
        response = await client.post("/login", data=fields)
        assert response.status_code == 303
        assert response.headers["location"] == "/workers"
        cookies = response.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith(f"{SESSION_COOKIE}="))
        assert "HttpOnly" in session
        assert "SameSite=strict" in session or "samesite=strict" in session.lower()
        assert "Path=/" in session
        assert all(TOKEN not in cookie for cookie in cookies)
        assert TOKEN not in client.cookies[SESSION_COOKIE]
        assert any(c.startswith(f"{LOGIN_COOKIE}=") and "Max-Age=0" in c for c in cookies)
        assert "Workers" in await page(client, "/workers")
        assert (await client.get("/login")).status_code == 303  # already in


async def test_a_wrong_token_or_a_forged_login_form_is_refused(app: App) -> None:
    async with console(app) as client:
        wrong = await login(client, "not-the-token")
        assert wrong.status_code == 401
        assert "not the server&#x27;s token" in wrong.text
        assert SESSION_COOKIE not in client.cookies
        assert (await client.get("/")).status_code == 303
        forged = await client.post("/login", data={"csrf": "guess", "token": TOKEN})
        assert forged.status_code == 403
        bare = await client.post("/login", data={"token": TOKEN})
        assert bare.status_code == 403
        assert SESSION_COOKIE not in client.cookies


async def test_a_guessing_client_is_slowed_alone_and_the_right_token_always_logs_in(
    app: App,
) -> None:
    server = create_server(app, ServerSettings(token=TOKEN, cache_seconds=0.0))

    def client_at(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=server, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://localhost")

    async with client_at("10.0.0.66") as guesser, client_at("10.0.0.7") as colleague:
        for _ in range(10):
            assert (await login(guesser, "guess")).status_code == 401
        started = time.monotonic()
        assert (await login(guesser, "guess")).status_code == 429
        assert time.monotonic() - started >= 0.5, "a slowed client's try was not slowed"
        assert (await login(colleague)).status_code == 303  # another client: not slowed
        assert (await login(guesser)).status_code == 303  # the right token: never refused


async def test_login_only_returns_to_paths_on_this_server(app: App) -> None:
    async with console(app) as client:
        form = await client.get("/login")
        fields = {"csrf": hidden(form.text, "csrf"), "token": TOKEN, "next": "//evil.example/"}
        response = await client.post("/login", data=fields)
    assert response.headers["location"] == "/"


async def test_logout_ends_the_session_for_good(app: App) -> None:
    async with console(app) as client:
        csrf = await logged_in(client)
        cookie = client.cookies[SESSION_COOKIE]
        assert (await client.post("/logout", data={})).status_code == 403
        response = await client.post("/logout", data={"csrf": csrf})
        assert response.status_code == 303
        assert response.headers["location"] == "/login"
        assert (await client.get("/")).status_code == 303
        client.cookies.set(SESSION_COOKIE, cookie)  # the old cookie, brought back
        assert (await client.get("/")).status_code == 303


async def test_form_posts_without_the_sessions_csrf_token_are_refused(app: App) -> None:
    register(app)
    job_id = await dead_letter(app)
    async with console(app) as client:
        csrf = await logged_in(client)
        attempts = [
            ("/dead-letters/mail/replay", {"job_id": job_id}),
            ("/dead-letters/mail/replay", {"job_id": job_id, "csrf": "forged"}),
            ("/dead-letters/mail/replay", {"job_id": job_id, "csrf": csrf[:-1]}),
            ("/dead-letters/mail/purge", {}),
            ("/dead-letters/mail/purge", {"csrf": ""}),
        ]
        for path, fields in attempts:
            response = await client.post(path, data=fields)
            assert response.status_code == 403, (path, fields)
            assert "did not come from your console session" in response.text
        as_json = await client.post("/dead-letters/mail/purge", json={"csrf": csrf})
        assert as_json.status_code == 403
    assert (await (await app.abroker()).queue_stats("mail.dlq")).ready == 1


async def test_without_a_token_pages_are_open_and_forms_still_need_csrf(app: App) -> None:
    register(app)
    await dead_letter(app)
    async with console(app, token=None) as client:
        text = await page(client, "/dead-letters/mail")
        assert SESSION_COOKIE in client.cookies
        assert "Log out" not in text
        refused = await client.post("/dead-letters/mail/purge", data={})
        assert refused.status_code == 403
        assert (await (await app.abroker()).queue_stats("mail.dlq")).ready == 1
        purged = await client.post("/dead-letters/mail/purge", data={"csrf": hidden(text, "csrf")})
        assert purged.status_code == 303
        assert (await client.get("/login")).headers["location"] == "/"
    assert (await (await app.abroker()).queue_stats("mail.dlq")).ready == 0


async def test_console_responses_carry_a_strict_content_security_policy(app: App) -> None:
    async with console(app) as client:
        await logged_in(client)
        response = await client.get("/")
        script = await client.get("/static/console.js")
        missing = await client.get("/static/../app.py")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert missing.status_code == 404


def test_the_console_is_mounted_after_the_servers_middleware_and_once() -> None:
    app = App("memory://")
    settings = ServerSettings()
    with pytest.raises(RuntimeError, match="after the server's middleware"):
        mount_console(FastAPI(), app, settings)
    server = create_server(app, settings)
    mount_console(server, app, settings)
    count = len(server.user_middleware)
    mount_console(server, app, settings)
    assert len(server.user_middleware) == count


async def test_a_loopback_server_answers_only_to_its_own_names(app: App) -> None:
    # DNS rebinding: a page at evil.example resolves its name to 127.0.0.1, and the
    # browser then sends "Host: evil.example" to the server on loopback.
    register(app)
    async with console(app, token=None) as client:
        for path in ["/", "/dead-letters", "/api/queues", "/health"]:
            refused = await client.get(path, headers={"Host": "evil.example:8000"})
            assert refused.status_code == 400, path
            assert refused.json()["error"]["type"] == "BadHost"
        for name in ["localhost:8000", "127.0.0.1", "[::1]:8000"]:
            assert (await client.get("/health", headers={"Host": name})).status_code == 200
    async with console(app, token=None, allowed_hosts=("conveyor.internal",)) as client:
        named = await client.get("/health", headers={"Host": "conveyor.internal"})
        assert named.status_code == 200
        assert (await client.get("/health")).status_code == 400  # localhost, no longer listed


async def test_a_change_sent_by_a_page_of_another_origin_is_refused_and_changes_nothing(
    app: App,
) -> None:
    register(app)
    job_id = await dead_letter(app)
    async with console(app) as client:
        session = await logged_in(client)
        form = {"csrf": session, "ids": job_id}
        for origin in ["http://evil.example", "null", "http://localhost:9999"]:
            refused = await client.post(
                "/dead-letters/mail/purge", data=form, headers={"Origin": origin}
            )
            assert refused.status_code == 403, origin
            api = await client.delete(
                "/api/queues/mail/dead-letters",
                headers={"Origin": origin, "Authorization": f"Bearer {TOKEN}"},
            )
            assert api.status_code == 403, origin
        assert (await app.ajob(job_id)).status.value == "dead"
        same = await client.post(
            "/dead-letters/mail/purge", data=form, headers={"Origin": "http://localhost"}
        )
        assert same.status_code in (200, 303)
