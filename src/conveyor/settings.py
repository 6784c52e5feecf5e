"""Broker URLs and their query options: the one place options from text are parsed.

``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``memory://``; options ride
in the query string (``?durability=fsync&lock_timeout=5``). Unknown options raise
ConfigError listing the valid ones, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from conveyor.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BrokerURL:
    scheme: str
    netloc: str
    path: str
    query: Mapping[str, str]

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        if not isinstance(url, str) or "://" not in url:
            shown = mask_url(url) if isinstance(url, str) else repr(url)
            raise ConfigError(
                f"broker URL {shown!r} has no scheme; use e.g. sqlite:///conveyor.db or memory://"
            )
        parts = urlsplit(url)
        query: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
            if key in query:
                raise ConfigError(f"option {key!r} appears twice in the broker URL")
            query[key] = value
        return cls(parts.scheme, parts.netloc, parts.path, query)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``: what errors, logs and pages may show."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


_PASSWORD_IN_URL = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@'\"]*):[^\s@'\"/]*@")


def mask_secrets(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``: the last guard of
    what a command prints, whatever put a URL into the message."""
    return _PASSWORD_IN_URL.sub(r"\1:***@", text)


def options_from_query(options_type: type[T], query: Mapping[str, str]) -> T:
    """Build a frozen options dataclass from URL query text, converting each field's type."""
    fields = {field.name: field for field in dataclasses.fields(options_type)}  # type: ignore[arg-type]
    unknown = sorted(set(query) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown broker URL option(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(options_type)
    values = {name: _convert(name, text, hints[name]) for name, text in query.items()}
    return options_type(**values)


def _convert(name: str, text: str, hint: Any) -> Any:
    kinds = [kind for kind in typing.get_args(hint) if kind is not type(None)] or [hint]
    if isinstance(hint, types.UnionType) and text.lower() in ("", "none"):
        return None
    kind = kinds[0]
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(kind, type) and issubclass(kind, Enum):
            return kind(text)
        return kind(text)
    except ValueError:
        valid = (
            f" (one of {', '.join(str(member.value) for member in kind)})"
            if isinstance(kind, type) and issubclass(kind, Enum)
            else ""
        )
        raise ConfigError(
            f"broker URL option {name}={text!r} is not a valid {kind.__name__}{valid}"
        ) from None
