"""Helpers for the HTTP server tests: an httpx client on create_server, and a parser for
the Prometheus text format that checks the exposition rules as it reads."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from conveyor.app import App
from conveyor.server import ServerSettings, create_server

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@asynccontextmanager
async def serve(
    app: App, *, authorized: bool = True, raise_errors: bool = True, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh server for ``app`` (token TOKEN, no caching unless given)."""
    options: dict[str, Any] = {"token": TOKEN, "cache_seconds": 0.0, **settings}
    server = create_server(app, ServerSettings(**options))
    transport = httpx.ASGITransport(app=server, raise_app_exceptions=raise_errors)
    headers = AUTH if authorized and options["token"] else {}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://localhost", headers=headers
    ) as client:
        yield client


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response's error object, after checking its status and shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert isinstance(error["type"], str)
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}

Series = tuple[str, frozenset[tuple[str, str]]]


class Metrics:
    """Samples of an exposition, read line by line."""

    def __init__(self, text: str) -> None:
        assert text.endswith("\n")
        self.types: dict[str, str] = {}
        self.helps: dict[str, str] = {}
        self.samples: dict[Series, float] = {}
        self.order: list[Series] = []
        for line in text.splitlines():
            self._line(line)

    def _line(self, line: str) -> None:
        if line.startswith("# HELP "):
            name, _, text = line[7:].partition(" ")
            assert name not in self.helps, f"second HELP for {name}"
            self.helps[name] = text
            return
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name in self.helps, f"TYPE before HELP for {name}"
            assert name not in self.types, f"second TYPE for {name}"
            self.types[name] = kind
            return
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, raw_labels, value = match.groups()
        family = self.family_of(name)
        assert family in self.types, f"{name} has no TYPE line before it"
        labels = self._labels(raw_labels or "")
        series = (name, frozenset(labels.items()))
        assert series not in self.samples, f"duplicate series {line!r}"
        self.samples[series] = float(value)
        self.order.append(series)

    def family_of(self, name: str) -> str:
        for suffix in ("_bucket", "_sum", "_count"):
            base = name.removesuffix(suffix)
            if base != name and self.types.get(base) == "histogram":
                return base
        return name

    @staticmethod
    def _labels(raw: str) -> dict[str, str]:
        labels: dict[str, str] = {}
        position = 0
        while position < len(raw):
            match = _LABEL.match(raw, position)
            assert match, f"bad labels {raw!r} at {position}"
            key, value = match.group(1), match.group(2)
            labels[key] = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], value)
            position = match.end()
        return labels

    def get(self, name: str, **labels: str) -> float:
        series = (name, frozenset(labels.items()))
        assert series in self.samples, f"no sample {name}{labels}"
        return self.samples[series]

    def named(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {labels: value for (n, labels), value in self.samples.items() if n == name}
