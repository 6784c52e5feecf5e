"""A kafka:// URL and keywords resolved once into librdkafka settings.

``kafka://user:password@host:9092,host2:9092?security_protocol=SASL_SSL&sasl_mechanism=PLAIN``:
the user and password of the URL are the SASL credentials. The password is kept out of
``repr`` and never appears in an error: errors show the URL through ``mask_url``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from conveyor.errors import ConfigError
from conveyor.settings import BrokerURL, mask_url, options_from_query

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")

log = logging.getLogger("conveyor.kafka")


@dataclass(frozen=True, slots=True)
class KafkaOptions:
    """Connection settings; every one may come from the URL query or a keyword.

    Args:
        security_protocol: PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL.
        sasl_mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or GSSAPI.
        sasl_username / sasl_password: credentials (the URL's user and password set them).
        ssl_cafile / ssl_certfile / ssl_keyfile: PEM files for TLS and client certificates.
        client_id: the name brokers log for this client.
        timeout: seconds an admin call or a produce waits for the broker before it fails.
        linger: seconds the producer waits to fill a batch.
        idempotence: librdkafka's idempotent producer, so that its own retries neither
            duplicate nor reorder records (turn off for a broker without InitProducerId).
    """

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    client_id: str = "conveyor"
    timeout: float = 30.0
    linger: float = 0.005
    idempotence: bool = True

    def __post_init__(self) -> None:
        protocol = self.security_protocol.upper()
        if protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                f"not {self.security_protocol!r}"
            )
        object.__setattr__(self, "security_protocol", protocol)
        if self.sasl_mechanism is not None and self.sasl_mechanism.upper() not in SASL_MECHANISMS:
            raise ConfigError(
                f"sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)}, "
                f"not {self.sasl_mechanism!r}"
            )
        if self.timeout <= 0:
            raise ConfigError(f"timeout must be positive, not {self.timeout}")


def parse(url: str, keywords: Mapping[str, Any] | None = None) -> tuple[str, KafkaOptions]:
    """The bootstrap servers and options of ``url``; keywords override the query."""
    parsed = BrokerURL.parse(url)
    host_part = parsed.netloc.rpartition("@")[2]
    if not host_part:
        raise ConfigError(f"{mask_url(url)!r} names no bootstrap server; use kafka://host:9092")
    options = options_from_query(KafkaOptions, parsed.query)
    credentials: dict[str, Any] = {}
    if "@" in parsed.netloc:
        user, _, password = parsed.netloc.rpartition("@")[0].partition(":")
        credentials = {"sasl_username": unquote(user) or None, "sasl_password": unquote(password)}
        credentials = {k: v for k, v in credentials.items() if v}
        if "security_protocol" not in parsed.query:
            credentials["security_protocol"] = "SASL_PLAINTEXT"
        if "sasl_mechanism" not in parsed.query:
            credentials["sasl_mechanism"] = "PLAIN"
    valid = {f.name for f in dataclasses.fields(KafkaOptions)}
    unknown = sorted(set(keywords or {}) - valid)
    if unknown:
        raise ConfigError(
            f"unknown kafka option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
        )
    options = dataclasses.replace(options, **credentials, **(keywords or {}))
    servers = ",".join(_servers(host_part, url))
    return servers, options


def _servers(hosts: str, url: str) -> list[str]:
    servers = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":") if ":" in host else (host, "", "9092")
        if not name or not port.isdigit():
            raise ConfigError(f"bad bootstrap server {host!r} in {mask_url(url)!r}")
        servers.append(f"{name}:{port}")
    return servers


def client_config(servers: str, options: KafkaOptions) -> dict[str, Any]:
    """librdkafka's settings shared by the producer, consumers and admin client."""
    config: dict[str, Any] = {
        "bootstrap.servers": servers,
        "client.id": options.client_id,
        "security.protocol": options.security_protocol,
        "logger": log,
        # a metadata lookup must not create the topic it asks about (brokers with
        # auto.create.topics.enable, Kafka's default, would); App(auto_create_topics=...)
        # decides that
        "allow.auto.create.topics": False,
    }
    optional = {
        "sasl.mechanism": options.sasl_mechanism,
        "sasl.username": options.sasl_username,
        "sasl.password": options.sasl_password,
        "ssl.ca.location": options.ssl_cafile,
        "ssl.certificate.location": options.ssl_certfile,
        "ssl.key.location": options.ssl_keyfile,
    }
    config.update({key: value for key, value in optional.items() if value is not None})
    return config


__all__ = ["KafkaOptions", "client_config", "parse"]
