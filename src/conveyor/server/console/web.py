"""What every console page shares: the session check, the layout, forms and their CSRF
check, live panels, and error pages.

A page is a list of panels. A full request gets the layout with every panel; the refresh
script asks for the same URL with ``X-Console-Panels: 1`` and gets the live panels' HTML
as JSON, which it swaps in. Forms sit in panels that are not live, so typing is never lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from conveyor.app import App
from conveyor.server.console.history import History
from conveyor.server.console.html import Html, escape, fmt, join, render_template, url
from conveyor.server.console.sessions import (
    CSRF_FIELD,
    MAX_AGE,
    SESSION_COOKIE,
    LoginThrottle,
    Session,
    Sessions,
    same,
)
from conveyor.server.settings import ServerSettings
from conveyor.server.state import ServerState

PANELS_HEADER = "x-console-panels"
REFRESH_SECONDS = 5
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 200

NAV = (
    ("overview", "/", "Overview"),
    ("dead-letters", "/dead-letters", "Dead letters"),
    ("topics", "/topics", "Topics"),
    ("groups", "/groups", "Consumer groups"),
    ("workers", "/workers", "Workers"),
    ("jobs", "/jobs", "Job lookup"),
)

Fields = dict[str, list[str]]


class Forbidden(Exception):
    """A form POST without the session's CSRF token: refused with 403."""


class NotFound(Exception):
    """Something a console URL names is not there: 404."""


@dataclass(frozen=True, slots=True)
class Panel:
    id: str
    title: str
    body: Html
    live: bool = True


@dataclass(slots=True)
class Page:
    title: str
    section: str
    panels: list[Panel] = field(default_factory=list)
    status: int = 200

    def add(self, id: str, title: str, body: Html, *, live: bool = True) -> None:
        self.panels.append(Panel(id, title, body, live))


Build = Callable[[Session], Awaitable[Page]]


class Console:
    """The console's shared state: the App, the server's settings, sessions and history."""

    def __init__(self, app: App, settings: ServerSettings, state: ServerState) -> None:
        self.app = app
        self.settings = settings
        self.state = state
        self.sessions = Sessions()
        self.throttle = LoginThrottle()
        self.history = History(state)

    @property
    def needs_login(self) -> bool:
        """With a token configured, every page needs a session made by logging in with it."""
        return self.settings.token is not None

    def session_of(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(SESSION_COOKIE))

    async def page(self, request: Request, build: Build) -> Response:
        """Render the page ``build`` makes for the request's session (whole, or its live
        panels as JSON for the refresh script); to the login page without a session."""
        session, created = self.session_of(request), False
        if session is None:
            if self.needs_login:
                return login_required(request)
            session, created = self.sessions.create(), True  # no token: a session for CSRF
        page = await build(session)
        response: Response
        if request.headers.get(PANELS_HEADER) == "1":
            live = {panel.id: str(panel.body) for panel in page.panels if panel.live}
            response = JSONResponse({"panels": live}, page.status)
        else:
            response = HTMLResponse(self.layout(page, session), page.status)
        if created:
            set_session_cookie(request, response, session)
        return response

    async def form(self, request: Request) -> tuple[Session, Fields]:
        """The posted form of a live session, after checking its CSRF token; else Forbidden."""
        fields = await read_form(request)
        session = self.session_of(request)
        if session is None or not same(first(fields, CSRF_FIELD), session.csrf):
            raise Forbidden(
                "This form did not come from your console session, or the session has ended. "
                "Reload the page and submit it again."
            )
        return session, fields

    def layout(self, page: Page, session: Session | None, *, refresh: bool = True) -> Html:
        nav = join(
            fmt('<a href="{}" class="{}">{}</a>', href, "here" if key == page.section else "", text)
            for key, href, text in NAV
        )
        notices = join(
            fmt('<p class="notice {}" role="status">{}</p>', notice.kind, notice.text)
            for notice in (session.take_notices() if session else [])
        )
        account = Html("")
        if session is not None and self.needs_login:
            account = post_form("/logout", session, button("Log out", "quiet"), css="account")
        panels = join(
            fmt(
                '<section class="panel"><h2>{}</h2><div id="{}"{}>{}</div></section>',
                panel.title,
                panel.id,
                Html(" data-live") if panel.live else Html(""),
                panel.body,
            )
            for panel in page.panels
        )
        live = refresh and any(panel.live for panel in page.panels)
        return render_template(
            "layout.html",
            title=escape(page.title),
            nav=nav,
            account=account,
            notices=notices,
            panels=panels,
            refresh=escape(REFRESH_SECONDS if live else 0),
        )

    def error_page(self, request: Request, status: int, title: str, message: str) -> Response:
        session = self.session_of(request)
        if request.headers.get(PANELS_HEADER) == "1":
            return JSONResponse({"error": message}, status)
        page = Page(title, "", [Panel("error", title, fmt("<p>{}</p>", message), live=False)])
        return HTMLResponse(self.layout(page, session, refresh=False), status)


# forms


def csrf_input(session: Session) -> Html:
    return fmt('<input type="hidden" name="{}" value="{}">', CSRF_FIELD, session.csrf)


def post_form(
    action: str, session: Session, body: Html, *, css: str = "", confirm: str | None = None
) -> Html:
    """A POST form carrying the session's CSRF token; ``confirm`` asks before sending."""
    asks = fmt(' data-confirm="{}"', confirm) if confirm else Html("")
    return fmt(
        '<form method="post" action="{}" class="{}"{}>{}{}</form>',
        action,
        css,
        asks,
        csrf_input(session),
        body,
    )


def button(text: str, css: str = "") -> Html:
    return fmt('<button type="submit" class="{}">{}</button>', css, text)


async def read_form(request: Request) -> Fields:
    """The URL-encoded form of a POST ({} for any other body)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != FORM_TYPE:
        return {}
    text = (await request.body()).decode("utf-8", errors="replace")
    try:
        return parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError:  # too many fields
        return {}


def first(fields: Fields, name: str) -> str | None:
    values = fields.get(name)
    return values[0] if values else None


def text_field(fields: Fields, name: str) -> str | None:
    """A form field stripped of spaces; None when missing or blank."""
    value = (first(fields, name) or "").strip()
    return value or None


# responses


def see_other(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303)


def login_required(request: Request) -> Response:
    if request.headers.get(PANELS_HEADER) == "1":
        return JSONResponse({"error": "log in again"}, 401)
    wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return see_other(url("/login", next=wanted if wanted != "/" else None))


def set_session_cookie(request: Request, response: Response, session: Session) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session.id,
        max_age=int(MAX_AGE),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def int_param(request: Request, name: str, default: int, *, low: int = 0, high: int = 10**9) -> int:
    """A whole-number query parameter kept within bounds (the default when unreadable)."""
    try:
        value = int(request.query_params.get(name, default))
    except ValueError:
        return default
    return max(low, min(high, value))
