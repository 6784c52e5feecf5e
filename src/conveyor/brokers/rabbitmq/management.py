"""The RabbitMQ management HTTP API: what AMQP cannot say.

AMQP has no command to list queues or exchanges, to read a queue's arguments or bindings,
or to count unacknowledged messages and lifetime totals. The management plugin can
(``rabbitmq-plugins enable rabbitmq_management``). It is optional: when it is off or out
of reach, ``ManagementUnavailable`` tells the caller, which then reports those figures as
unknown rather than inventing them.

Its figures are samples: RabbitMQ refreshes them every ``collect_statistics_interval``
(5 s by default), so they trail what AMQP sees. The standard library's HTTP client runs
in a thread, so the rabbitmq extra needs nothing beyond aio-pika.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

from conveyor.brokers.rabbitmq.options import mask


class ManagementUnavailable(Exception):
    """The management API did not answer (plugin off, wrong URL or credentials, timeout)."""


class Management:
    def __init__(
        self,
        base_url: str,
        user: str,
        password: str,
        vhost: str,
        timeout: float,
        context: ssl.SSLContext | None = None,
    ):
        self.base_url = base_url
        self._vhost = quote(vhost, safe="")
        self._timeout = timeout
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        self._context = context

    async def queue(self, name: str) -> dict[str, Any] | None:
        """A queue's figures; None if the API does not know the queue."""
        found = await self._get(f"queues/{self._vhost}/{quote(name, safe='')}", missing_ok=True)
        return found if isinstance(found, dict) else None

    async def queues(self, columns: Sequence[str], name_pattern: str | None = None) -> list[Any]:
        query: dict[str, str] = {"columns": ",".join(columns)}
        if name_pattern is not None:
            query |= {"name": name_pattern, "use_regex": "true"}
        found = await self._get(f"queues/{self._vhost}", query)
        return found if isinstance(found, list) else []

    async def exchange(self, name: str) -> dict[str, Any] | None:
        path = f"exchanges/{self._vhost}/{quote(name, safe='')}"
        found = await self._get(path, missing_ok=True)
        return found if isinstance(found, dict) else None

    async def exchanges(self) -> list[Any]:
        found = await self._get(f"exchanges/{self._vhost}", {"columns": "name,type,arguments"})
        return found if isinstance(found, list) else []

    async def bindings_from(self, exchange: str) -> list[Any]:
        path = f"exchanges/{self._vhost}/{quote(exchange, safe='')}/bindings/source"
        found = await self._get(path)
        return found if isinstance(found, list) else []

    async def _get(
        self, path: str, query: dict[str, str] | None = None, *, missing_ok: bool = False
    ) -> Any:
        url = f"{self.base_url}/api/{path}"
        if query:
            url = f"{url}?{urlencode(query)}"
        return await asyncio.to_thread(self._fetch, url, missing_ok)

    def _fetch(self, url: str, missing_ok: bool) -> Any:
        request = urllib.request.Request(url, headers=self._headers)
        where = mask(self.base_url)
        try:
            with urllib.request.urlopen(
                request, timeout=self._timeout, context=self._context
            ) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404 and missing_ok:
                return None
            reason = "refused the credentials" if exc.code in (401, 403) else f"HTTP {exc.code}"
            raise ManagementUnavailable(f"the management API at {where} {reason}") from None
        except (OSError, ValueError) as exc:
            why = getattr(exc, "reason", None) or exc
            raise ManagementUnavailable(
                f"the management API at {where} is out of reach ({why})"
            ) from None
