"""The broker URL of ``amqp://`` and ``amqps://``: where to connect, as whom, and how.

``amqp://user:password@host:port/vhost?option=value``. The vhost is the path without its
leading slash, percent-decoded (``/%2F`` and a bare ``/`` are both the default vhost
``/``). Passwords never leave this module unmasked except to open a connection.
"""

from __future__ import annotations

import math
import os
import ssl
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote, unquote, urlsplit

from conveyor.errors import ConfigError
from conveyor.settings import BrokerURL, options_from_query

DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}
MANAGEMENT_PORTS = {"amqp": ("http", 15672), "amqps": ("https", 15671)}


class QueueType(StrEnum):
    CLASSIC = "classic"
    QUORUM = "quorum"


@dataclass(frozen=True, slots=True)
class RabbitMQOptions:
    """Options in the broker URL's query string.

    Args:
        connect_timeout: seconds to reach the server, log in and open the vhost; also how
            long an operation waits for a lost connection to come back.
        heartbeat: seconds between AMQP heartbeats (0 turns them off), so that a dead peer
            is noticed even when no traffic flows.
        queue_type: "quorum" declares every queue as a replicated quorum queue; queues with
            a ``delivery_limit`` are quorum queues either way.
        management_url: the HTTP management API, for listings and statistics AMQP cannot
            give (default: http://host:15672/ with the URL's credentials).
        management: false never asks the management API; what only it knows is unknown.
        management_timeout: seconds to wait for the management API before giving up.
        reconnect_interval: seconds between attempts to reconnect a lost connection.
        connection_name: how the connection is named in RabbitMQ's own tools, to tell
            which process holds it.
        cafile: ``amqps://``: the PEM file of the authorities to trust instead of the
            system's (a private CA, a self-signed server); also used for the management API
            over https.
        certfile, keyfile: ``amqps://``: a client certificate and its key, for servers that
            ask for one (``keyfile`` defaults to the certificate's file).
        verify: ``amqps://``: false accepts any server certificate and name. For tests
            only: it gives up what TLS is for.
    """

    connect_timeout: float = 10.0
    heartbeat: int = 60
    queue_type: QueueType = QueueType.CLASSIC
    management_url: str | None = None
    management: bool = True
    management_timeout: float = 5.0
    reconnect_interval: float = 1.0
    connection_name: str = "conveyor"
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    verify: bool = True

    def __post_init__(self) -> None:
        for option in ("connect_timeout", "management_timeout", "reconnect_interval"):
            value = getattr(self, option)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{option} must be a number of seconds > 0, not {value}")
        if self.heartbeat < 0:
            raise ConfigError(f"heartbeat must be >= 0 seconds, not {self.heartbeat}")
        for option in ("cafile", "certfile", "keyfile"):
            path = getattr(self, option)
            if path is not None and not os.path.isfile(path):
                raise ConfigError(f"{option} {path!r} is not a file; give the path of a PEM file")
        if self.keyfile is not None and self.certfile is None:
            raise ConfigError("keyfile needs certfile: give the client certificate too")

    @property
    def tls_options(self) -> bool:
        return (self.cafile, self.certfile, self.keyfile, self.verify) != (None, None, None, True)

    def tls_context(self) -> ssl.SSLContext:
        """The TLS settings for ``amqps://`` and an https management API."""
        try:
            context = ssl.create_default_context(cafile=self.cafile)
            if self.certfile is not None:
                context.load_cert_chain(self.certfile, self.keyfile)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"cannot use the TLS files given (cafile, certfile, keyfile): {exc}; "
                "give PEM files, the key unencrypted"
            ) from None
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and as whom to connect; ``repr`` and ``masked`` hide the password."""

    scheme: str
    host: str
    port: int
    user: str
    password: str
    vhost: str

    @property
    def tls(self) -> bool:
        return self.scheme == "amqps"

    @property
    def masked(self) -> str:
        """The URL for messages and logs: ``amqp://guest:***@host:5672/vhost``."""
        vhost = "" if self.vhost == "/" else quote(self.vhost, safe="")
        return f"{self.scheme}://{quote(self.user, safe='')}:***@{self.host}:{self.port}/{vhost}"

    def __repr__(self) -> str:
        return f"Endpoint({self.masked!r})"

    def management_base(self, override: str | None) -> str:
        if override:
            return override.rstrip("/")
        scheme, port = MANAGEMENT_PORTS[self.scheme]
        return f"{scheme}://{self.host}:{port}"


def parse(url: str) -> tuple[Endpoint, RabbitMQOptions]:
    """The endpoint and options of an ``amqp://`` URL; ConfigError names what is wrong."""
    parsed = BrokerURL.parse(url)
    if parsed.scheme not in DEFAULT_PORTS:
        raise ConfigError(f"not a RabbitMQ URL: {mask(url)}; use amqp:// or amqps://")
    parts = urlsplit(url)
    try:
        port = parts.port or DEFAULT_PORTS[parsed.scheme]
    except ValueError:
        raise ConfigError(f"the port in {mask(url)} is not a number from 1 to 65535") from None
    vhost = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
    endpoint = Endpoint(
        scheme=parsed.scheme,
        host=parts.hostname or "localhost",
        port=port,
        user=unquote(parts.username) if parts.username is not None else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        vhost=vhost or "/",
    )
    options = options_from_query(RabbitMQOptions, parsed.query)
    if options.tls_options and not endpoint.tls:
        raise ConfigError(
            "cafile, certfile, keyfile and verify are TLS options: use amqps:// to connect "
            "with TLS, or leave them out"
        )
    return endpoint, options


def mask(url: str) -> str:
    """``url`` with any password replaced by ``***``, for text that may be shown or logged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hostinfo}").geturl()
