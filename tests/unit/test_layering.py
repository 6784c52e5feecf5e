"""The dependency rules of docs/ARCHITECTURE.md, checked on the import statements."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "conveyor"
# Dotted module or package names under conveyor; a package's every module is pure.
PURE = [
    "assignors",
    "brokers.group_state",
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
SEAM_VALUES = ("conveyor.brokers.stream_types", "conveyor.brokers.types")
"""The seam's plain values, which pure logic may take and return."""


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)  # and `from conveyor import brokers` as conveyor.brokers:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def pure_files() -> list[Path]:
    files: list[Path] = []
    for name in PURE:
        path = SRC.joinpath(*name.split("."))
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")])
    return files


@pytest.mark.parametrize("path", pure_files(), ids=lambda path: path.relative_to(SRC).as_posix())
def test_pure_modules_do_no_io(path: Path) -> None:
    bad = {
        name
        for name in imports_of(path)
        for f in FORBIDDEN_IN_PURE
        if (name == f or name.startswith(f + "."))
        and not any(name == v or name.startswith(v + ".") for v in SEAM_VALUES)
    }
    assert not bad, f"{path.relative_to(SRC)} imports {bad}"


APP_AND_ABOVE = (
    "conveyor.app",
    "conveyor.worker",
    "conveyor.server",
    "conveyor.cli",
    "conveyor.demo",
)


def test_backends_never_import_the_layers_above_them() -> None:
    above = (*APP_AND_ABOVE, "conveyor.tasks", "conveyor.events")
    for path in (SRC / "brokers").rglob("*.py"):
        bad = {name for name in imports_of(path) if name.startswith(above)}
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


@pytest.mark.parametrize("layer", ["tasks", "events"])
def test_tasks_and_events_never_import_the_app_or_worker(layer: str) -> None:
    for path in (SRC / layer).rglob("*.py"):
        bad = {name for name in imports_of(path) if name.startswith(APP_AND_ABOVE)}
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_importing_conveyor_loads_no_engine() -> None:
    code = (
        "import sys, conveyor\n"
        "loaded = [m for m in ('sqlite3', 'conveyor.brokers.embedded', 'aio_pika', 'redis')"
        " if m in sys.modules]\n"
        "print(','.join(loaded))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert shown == ""


SCHEMES = {"sqlite", "memory", "amqp", "amqps", "redis", "rediss", "unix", "kafka"}


def _tests_a_scheme(node: ast.AST) -> bool:
    """A comparison with, or a ``startswith`` of, a URL scheme written out."""

    def is_scheme(value: ast.AST) -> bool:
        return (
            isinstance(value, ast.Constant)
            and isinstance(value.value, str)
            and value.value.rstrip(":/") in SCHEMES
        )

    if isinstance(node, ast.Compare):
        return any(is_scheme(part) for part in [node.left, *node.comparators])
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("startswith", "endswith")
    ):
        return any(is_scheme(arg) for arg in node.args)
    return False


ENGINE_ERRORS = {"DatabaseLocked", "DatabaseError", "NotAConveyorDatabase", "SchemaTooNew"}


@pytest.mark.parametrize("layer", ["cli", "server", "worker", "tasks", "events", "app.py"])
def test_clients_of_the_seam_never_test_url_schemes_or_catch_engine_errors(layer: str) -> None:
    root = SRC / layer
    for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        where = path.relative_to(SRC)
        assert not [n for n in ast.walk(tree) if _tests_a_scheme(n)], f"{where} tests a scheme"
        caught = {
            name.id if isinstance(name, ast.Name) else getattr(name, "attr", "")
            for handler in ast.walk(tree)
            if isinstance(handler, ast.ExceptHandler) and handler.type is not None
            for name in ast.walk(handler.type)
            if isinstance(name, ast.Name | ast.Attribute)
        }
        assert not caught & ENGINE_ERRORS, f"{where} catches {caught & ENGINE_ERRORS}"


def test_only_the_broker_registry_names_concrete_backends() -> None:
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC).as_posix()
        if relative.startswith("brokers/") or relative == "__init__.py":
            continue
        bad = {n for n in imports_of(path) if n.startswith("conveyor.brokers.embedded")}
        assert not bad, f"{relative} imports a concrete backend: {bad}"
