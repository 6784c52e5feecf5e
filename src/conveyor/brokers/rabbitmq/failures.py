"""RabbitMQ's refusals and network failures as Conveyor errors.

No raw aiormq exception leaves the backend. A channel error is the server refusing one
command (and closing that channel); a connection error means the server is out of reach
for now. Messages name the broker by its masked URL, never with the password.
"""

from __future__ import annotations

import asyncio
import re

import aiormq.exceptions as amqp

from conveyor.brokers.rabbitmq.arguments import inequivalent
from conveyor.brokers.rabbitmq.options import Endpoint
from conveyor.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    ConveyorError,
    ExchangeNotFound,
    QueueNotFound,
)

REFUSALS: tuple[type[amqp.ChannelClosed], ...] = (
    amqp.ChannelNotFoundEntity,
    amqp.ChannelPreconditionFailed,
    amqp.ChannelAccessRefused,
    amqp.ChannelLockedResource,
)
"""Channel errors that answer the command itself: retrying it would fail the same way."""

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    amqp.AMQPConnectionError,
    amqp.ChannelClosed,
    amqp.ChannelInvalidStateError,
    ConnectionError,
    OSError,
)
"""Failures of the connection under a command: worth retrying once it is back."""

_MISSING = re.compile(r"no (?P<kind>queue|exchange) '(?P<name>[^']*)'")


def reply_text(exc: BaseException) -> str:
    return ": ".join(str(arg) for arg in exc.args) if exc.args else type(exc).__name__


def _scrubbed(text: str, endpoint: Endpoint) -> str:
    """Exception text with the password blanked, should a library have quoted it."""
    return text.replace(endpoint.password, "***") if len(endpoint.password) >= 4 else text


def refusal(exc: amqp.ChannelClosed) -> ConveyorError:
    """The Conveyor error for a command the server refused."""
    text = reply_text(exc)
    if isinstance(exc, amqp.ChannelNotFoundEntity):
        found = _MISSING.search(text)
        if found and found["kind"] == "queue":
            return QueueNotFound(found["name"])
        if found:
            return ExchangeNotFound(found["name"])
    if isinstance(exc, amqp.ChannelPreconditionFailed):
        readable = inequivalent(text)
        if readable is not None:
            return readable
        if "invalid arg" in text:
            return ConfigError(f"RabbitMQ refused the declaration: {text}")
    if isinstance(exc, amqp.ChannelAccessRefused):
        return ConfigError(
            f"RabbitMQ refused access: {text}; names starting with 'amq.' are the server's, "
            "and the user needs configure/write/read permissions on the vhost"
        )
    return BrokerError(f"RabbitMQ refused the command: {text}")


def unavailable(endpoint: Endpoint, exc: BaseException | None, doing: str) -> BrokerUnavailable:
    """BrokerUnavailable for a connection that failed (or stayed away) while ``doing``."""
    if exc is None or isinstance(exc, asyncio.TimeoutError | TimeoutError):
        why = "no answer in time"
    else:
        why = _scrubbed(reply_text(exc), endpoint)
    return BrokerUnavailable(
        f"RabbitMQ at {endpoint.masked} is unavailable while {doing}: {why}; check that the "
        "server runs and is reachable (it reconnects by itself once it is back)"
    )


def connect_failure(
    endpoint: Endpoint, exc: BaseException | None, timeout: float
) -> BrokerUnavailable:
    """BrokerUnavailable for a first connection that failed, saying which of the usual
    causes it was (server down, wrong credentials, missing vhost, timeout)."""
    where = endpoint.masked
    if exc is None or isinstance(exc, asyncio.TimeoutError | TimeoutError):
        why = f"no answer within connect_timeout={timeout:g}s"
    elif isinstance(exc, amqp.AuthenticationError | amqp.ProbableAuthenticationError):
        why = f"user {endpoint.user!r} was refused: wrong user name or password"
    elif isinstance(exc, amqp.InvalidFrameError) and "Connection.Close" in reply_text(exc):
        why = (
            f"the server refused to open virtual host {endpoint.vhost!r}: it does not exist "
            f"or user {endpoint.user!r} has no permission on it"
        )
    elif isinstance(exc, amqp.ConnectionNotAllowed):
        why = f"the server refused the virtual host {endpoint.vhost!r}: {reply_text(exc)}"
    elif isinstance(exc, ConnectionRefusedError) or "Connect call failed" in reply_text(exc):
        why = f"nothing accepts connections on {endpoint.host}:{endpoint.port}"
    elif "CERTIFICATE_VERIFY_FAILED" in reply_text(exc):
        detail = _scrubbed(reply_text(exc), endpoint)
        why = (
            f"the server's TLS certificate is not trusted ({detail}); give the authority "
            "that signed it with ?cafile=PATH"
        )
    else:
        why = f"{type(exc).__name__}: {_scrubbed(reply_text(exc), endpoint)}"
    return BrokerUnavailable(f"cannot connect to RabbitMQ at {where}: {why}")
