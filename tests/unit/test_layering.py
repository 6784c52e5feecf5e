"""The dependency rules of docs/ARCHITECTURE.md, checked on the import statements."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "conveyor"
# Dotted module names under conveyor.
PURE = [
    "assignors",
    "codecs",
    "cron",
    "errors",
    "events.windows",
    "message",
    "names",
    "partitioner",
    "retry",
    "routing",
    "worker.autoscale",
]
FORBIDDEN_IN_PURE = {"asyncio", "sqlite3", "socket", "threading", "subprocess", "conveyor.brokers"}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)  # and `from conveyor import brokers` as conveyor.brokers:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_do_no_io(module: str) -> None:
    imported = imports_of(SRC.joinpath(*module.split(".")).with_suffix(".py"))
    bad = {
        name
        for name in imported
        for f in FORBIDDEN_IN_PURE
        if name == f or name.startswith(f + ".")
    }
    assert not bad, f"{module}.py imports {bad}"


def test_backends_never_import_the_layers_above_them() -> None:
    above = ("conveyor.app", "conveyor.worker", "conveyor.server", "conveyor.cli", "conveyor.demo")
    for path in (SRC / "brokers").rglob("*.py"):
        bad = {name for name in imports_of(path) if name.startswith(above)}
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_only_the_broker_registry_names_concrete_backends() -> None:
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC).as_posix()
        if relative.startswith("brokers/") or relative == "__init__.py":
            continue
        bad = {n for n in imports_of(path) if n.startswith("conveyor.brokers.embedded")}
        assert not bad, f"{relative} imports a concrete backend: {bad}"
