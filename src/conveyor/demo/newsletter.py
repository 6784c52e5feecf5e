"""The newsletter campaign's tasks: one email per job, retried when the server says later.

Workers load this module as ``conveyor.demo.newsletter:app``; the broker URL and the SMTP
server's address come from the environment the demo sets.
"""

from __future__ import annotations

import os
import smtplib
import threading
from email.message import EmailMessage

from conveyor.app import App
from conveyor.errors import PermanentError, TemporaryError

URL_ENV = "CONVEYOR_DEMO_URL"
SMTP_ENV = "CONVEYOR_DEMO_SMTP"
QUEUE = "emails"

app = App(os.environ.get(URL_ENV, "sqlite:///conveyor-demo.db"), default_queue=QUEUE)
_connections = threading.local()


def _smtp() -> smtplib.SMTP:
    """One SMTP connection per worker thread, opened on first use."""
    connection: smtplib.SMTP | None = getattr(_connections, "smtp", None)
    if connection is None:
        host, _, port = os.environ.get(SMTP_ENV, "127.0.0.1:8025").partition(":")
        connection = _connections.smtp = smtplib.SMTP(host, int(port), timeout=10)
    return connection


@app.task(max_retries=4, backoff=[0.5, 1.0, 2.0, 4.0], timeout=30)
def send_email(to: str, subject: str, body: str) -> str:
    """Send one email; 4xx answers are retried with backoff, 5xx ones dead-lettered."""
    if "@" not in to:
        raise PermanentError(f"{to!r} is not an email address")
    message = EmailMessage()
    message["From"] = "news@conveyor.example"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    try:
        _smtp().send_message(message)
    except smtplib.SMTPRecipientsRefused as refused:
        code, reason = next(iter(refused.recipients.values()))
        if 400 <= code < 500:
            raise TemporaryError(f"{to}: {code} {reason.decode()}") from None
        raise PermanentError(f"{to}: {code} {reason.decode()}") from None
    except (smtplib.SMTPServerDisconnected, ConnectionError) as error:
        _connections.smtp = None
        raise TemporaryError(f"the mail server went away: {error}") from None
    return "sent"


def recipients(count: int, invalid_every: int = 500) -> list[str]:
    """The campaign's list: every ``invalid_every``-th address is at a domain that bounces."""
    from conveyor.demo.smtp import INVALID_DOMAIN

    return [
        f"reader{n}@{INVALID_DOMAIN}"
        if n % invalid_every == invalid_every - 1
        else f"reader{n}@example.com"
        for n in range(count)
    ]
