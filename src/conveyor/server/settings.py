"""How the HTTP server listens, authenticates, limits requests and judges health.

Values come from keyword arguments (the CLI's flags), then the environment, then defaults.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from conveyor.brokers.types import DURATION_BUCKETS
from conveyor.errors import ConfigError

TOKEN_ENV = "CONVEYOR_API_TOKEN"
MAX_BODY_ENV = "CONVEYOR_API_MAX_BODY_BYTES"
ALLOWED_HOSTS_ENV = "CONVEYOR_ALLOWED_HOSTS"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ALERT_ENV_PREFIX = "CONVEYOR_ALERT_"


@dataclass(frozen=True, slots=True)
class AlertThresholds:
    """Above any of these, /health reports "degraded" and says why.

    Args:
        queue_depth: ready messages in one queue (dead-letter queues excepted).
        dead_letters: messages in one dead-letter queue.
        error_rate: share of the jobs finished within ``error_window`` seconds that failed
            or went dead (0.05 = 5%); judged once at least ``error_min_jobs`` finished.
        consumer_lag: records a consumer group has yet to read, over all its partitions.
        oldest_age: seconds the oldest ready message of a queue has waited.
    """

    queue_depth: int = 1000
    dead_letters: int = 100
    error_rate: float = 0.05
    error_window: float = 300.0
    error_min_jobs: int = 1
    consumer_lag: int = 10_000
    oldest_age: float = 300.0

    def __post_init__(self) -> None:
        for option in fields(self):
            value = getattr(self, option.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"alert threshold {option.name} must be a number, not {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"alert threshold {option.name} must be >= 0, not {value}")
        if self.error_window <= 0:
            raise ConfigError(f"alert threshold error_window must be > 0, not {self.error_window}")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], overrides: Mapping[str, float | None] | None = None
    ) -> AlertThresholds:
        """``CONVEYOR_ALERT_QUEUE_DEPTH`` and so on, then ``overrides`` (None: not given)."""
        values: dict[str, Any] = {}
        for option in fields(cls):
            variable = ALERT_ENV_PREFIX + option.name.upper()
            given = (overrides or {}).get(option.name)
            if given is not None:
                values[option.name] = given
            elif variable in environ:
                values[option.name] = _number(environ[variable], variable, option.type == "int")
        unknown = set(overrides or {}) - {option.name for option in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown alert threshold(s): {', '.join(sorted(unknown))}")
        return cls(**values)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The server's settings.

    Args:
        host, port: where ``conveyor serve`` listens. On a host other than loopback every
            request needs the token, and the server refuses to start without one.
        token: the bearer token; required for every mutating request (POST, PUT, PATCH,
            DELETE). Without one, the API is read-only.
        max_body_bytes: larger request bodies get 413.
        cache_seconds: how long queue statistics, job figures and group lag are reused by
            the list, metrics and health endpoints (they cost a scan on the embedded broker).
        worker_lost_after: seconds without a heartbeat after which a worker counts as lost.
        sample_interval: seconds between the console's samples of queue figures, kept in
            the result store for its charts; the store keeps one per queue per interval,
            whichever server on it took the sample first.
        duration_buckets: upper bounds (seconds) of the job duration histogram.
        alerts: thresholds of /health.
        allowed_hosts: the names the server answers to (the Host header; a port is
            ignored). On loopback, by default only loopback names, so that a web page
            elsewhere cannot reach the server through DNS rebinding; beyond loopback, by
            default any (every request needs the token there).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = field(default=None, repr=False)
    max_body_bytes: int = 1024 * 1024
    cache_seconds: float = 1.0
    worker_lost_after: float = 15.0
    sample_interval: float = 5.0
    duration_buckets: tuple[float, ...] = DURATION_BUCKETS
    alerts: AlertThresholds = field(default_factory=AlertThresholds)
    allowed_hosts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.token is not None and not self.token.strip():
            raise ConfigError("the API token is empty; set a long random value")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0-65535, not {self.port}")
        if self.max_body_bytes < 1:
            raise ConfigError(f"max_body_bytes must be at least 1, not {self.max_body_bytes}")
        if self.cache_seconds < 0 or self.worker_lost_after <= 0:
            raise ConfigError("cache_seconds must be >= 0 and worker_lost_after > 0")
        if not 0 < self.sample_interval <= 3600:
            raise ConfigError(
                f"sample_interval must be > 0 and at most 3600 seconds, not {self.sample_interval}"
            )

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def trusted_hosts(self) -> frozenset[str] | None:
        """The Host names requests may carry (lower case, no port); None: any."""
        if self.allowed_hosts is not None:
            return frozenset(name.strip().lower().strip("[]") for name in self.allowed_hosts)
        if self.loopback:
            return frozenset({*LOOPBACK_NAMES, self.host.lower().strip("[]")})
        return None

    @property
    def token_for_reads(self) -> bool:
        """Whether reading needs the token too: on any host but loopback."""
        return not self.loopback

    def check(self) -> None:
        """Refuse to serve a non-loopback host without a token."""
        if self.token_for_reads and self.token is None:
            raise ConfigError(
                f"refusing to listen on {self.host} without an API token: set {TOKEN_ENV} or "
                "pass --token-file (or listen on 127.0.0.1)"
            )

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        *,
        token_file: str | None = None,
        alerts: Mapping[str, float | None] | None = None,
        **options: Any,
    ) -> ServerSettings:
        """Settings from ``options`` (None: not given), then the environment."""
        given = {key: value for key, value in options.items() if value is not None}
        if token_file is not None:
            given["token"] = read_token_file(token_file)
        elif environ.get(TOKEN_ENV):
            given["token"] = environ[TOKEN_ENV].strip()
        if "allowed_hosts" not in given and environ.get(ALLOWED_HOSTS_ENV):
            given["allowed_hosts"] = tuple(
                name for name in environ[ALLOWED_HOSTS_ENV].split(",") if name.strip()
            )
        if "max_body_bytes" not in given and MAX_BODY_ENV in environ:
            given["max_body_bytes"] = _number(environ[MAX_BODY_ENV], MAX_BODY_ENV, True)
        return replace(cls(**given), alerts=AlertThresholds.from_env(environ, alerts))


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token_file(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError(f"cannot read the token file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the token file {path} is not UTF-8 text") from None
    if not token:
        raise ConfigError(f"the token file {path} is empty; put a long random token in it")
    return token


def _number(text: str, name: str, integer: bool) -> float:
    try:
        return int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}, not {text!r}") from None
