"""Logging in with the server's token, and out; the console's static files.

The login form carries a random value that must match a cookie set with the form, so a
login cannot be posted from another site. A right token starts a fresh session (a new id,
never one the browser brought); the token itself is only compared, in constant time.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from conveyor.server.console.html import Html, escape, fmt, render_template
from conveyor.server.console.sessions import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    LOGIN_FORM_AGE,
    SESSION_COOKIE,
    random_token,
    same,
)
from conveyor.server.console.web import (
    console_of,
    first,
    read_form,
    see_other,
    set_session_cookie,
)

router = APIRouter()

STATIC = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this server, else the overview."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(character in target for character in "\r\n\\"):
        return "/"
    return target


def login_form(
    request: Request, target: str | None, *, error: str = "", status: int = 200
) -> Response:
    token = random_token()
    page = render_template(
        "login.html",
        error=fmt('<p class="notice error" role="alert">{}</p>', error) if error else Html(""),
        csrf=escape(token),
        next=escape(safe_next(target)),
    )
    response = HTMLResponse(page, status)
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=LOGIN_FORM_AGE,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/login")
async def login_page(request: Request) -> Response:
    console = console_of(request)
    if not console.needs_login or console.session_of(request) is not None:
        return see_other(safe_next(request.query_params.get("next")))
    return login_form(request, request.query_params.get("next"))


@router.post("/login")
async def login(request: Request) -> Response:
    console = console_of(request)
    fields = await read_form(request)
    if not same(first(fields, CSRF_FIELD), request.cookies.get(LOGIN_COOKIE)):
        return console.error_page(
            request, 403, "Forbidden", "This login form has expired. Reload the page to log in."
        )
    if not console.needs_login:
        return see_other("/")
    client = request.client.host if request.client else "unknown"
    slowed = console.throttle.pause_for(client) > 0
    async with console.throttle.turn(client):
        if not same(first(fields, "token"), console.settings.token):
            console.throttle.failed(client)
            if slowed:
                error = "Too many wrong tokens: each try from here now waits a little longer."
                return login_form(request, first(fields, "next"), error=error, status=429)
            error = "That is not the server's token."
            return login_form(request, first(fields, "next"), error=error, status=401)
        console.throttle.succeeded(client)
    console.sessions.end(request.cookies.get(SESSION_COOKIE))
    session = console.sessions.create()
    response = see_other(safe_next(first(fields, "next")))
    set_session_cookie(request, response, session)
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    console = console_of(request)
    session, _ = await console.form(request)
    console.sessions.end(session.id)
    response = see_other("/login" if console.needs_login else "/")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@cache
def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        return Response(b"not found", 404, media_type="text/plain")
    return Response(
        _static(name), media_type=STATIC[name], headers={"Cache-Control": "max-age=300"}
    )
