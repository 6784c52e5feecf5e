"""The demo's mail server: a real SMTP server on loopback (aiosmtpd) that misbehaves on purpose.

It refuses addresses at ``invalid.example`` for good (550), and answers the first attempt for
every ``TEMPFAIL_EVERY``-th recipient with a temporary failure (451), as a greylisting or
overloaded server would. It counts what it accepted and refused, for the demo's summary.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller

INVALID_DOMAIN = "invalid.example"
TEMPFAIL_EVERY = 10


@dataclass
class MailCounts:
    delivered: int = 0
    temporary_failures: int = 0
    refused: int = 0
    recipients: set[str] = field(default_factory=set)


class _Handler:
    def __init__(self, counts: MailCounts) -> None:
        self.counts = counts
        self._lock = threading.Lock()
        self._tried: set[str] = set()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self._lock:
            if address.endswith("@" + INVALID_DOMAIN):
                self.counts.refused += 1
                return "550 5.1.1 no such mailbox"
            number = int("".join(ch for ch in address.split("@")[0] if ch.isdigit()) or 0)
            if number % TEMPFAIL_EVERY == 0 and address not in self._tried:
                self._tried.add(address)
                self.counts.temporary_failures += 1
                return "451 4.7.1 greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.counts.delivered += len(envelope.rcpt_tos)
            self.counts.recipients.update(envelope.rcpt_tos)
        return "250 Message accepted"


class MailServer:
    """Runs in a thread of the demo's main process."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.counts = MailCounts()
        self._controller = Controller(_Handler(self.counts), hostname="127.0.0.1", port=port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()
