"""Every Python snippet in README.md and docs/ runs, so the documentation cannot rot.

A document's snippets run in order in one namespace, as a reader pastes them into one
script, in a fresh working directory (``sqlite:///conveyor.db`` lands there). Each snippet
must stand on its own as a reader would paste it: its imports present, no top-level
``await``. Once a snippet has defined an ``app`` with tasks or subscribers, a real worker
runs it in the background, as ``conveyor worker`` would, so that ``job.result()`` and
subscribers work.
"""

from __future__ import annotations

import asyncio
import re
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor.app import App
from conveyor.worker.consume import Worker

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Snippet:
    document: Path
    line: int
    source: str

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def snippets(document: Path) -> list[Snippet]:
    text = document.read_text(encoding="utf-8")
    return [
        Snippet(document, text.count("\n", 0, match.start()) + 2, match.group(1))
        for match in _FENCE.finditer(text)
    ]


class BackgroundWorker:
    """A real Worker for the snippets' app, on a loop of its own thread."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.worker = Worker(app, concurrency=2, heartbeat_interval=0.5)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self.worker.run())
        finally:
            self.loop.run_until_complete(self.app.aclose())
            self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(lambda: self.worker.stop(graceful=False))
        self.thread.join(30)


@pytest.fixture
def workers() -> Iterator[list[BackgroundWorker]]:
    started: list[BackgroundWorker] = []
    try:
        yield started
    finally:
        for background in started:
            background.stop()
            background.app.close()


@pytest.mark.parametrize(
    "document",
    [d for d in DOCUMENTS if snippets(d)],
    ids=lambda d: str(d.relative_to(ROOT)),
)
def test_every_python_snippet_runs(
    document: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: list[BackgroundWorker],
) -> None:
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType("snippets")  # dataclasses look their module up by name
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace: dict[str, Any] = module.__dict__
    for snippet in snippets(document):
        try:
            code = compile(snippet.source, snippet.where, "exec")
        except SyntaxError as error:
            pytest.fail(f"{snippet.where}: {error.msg} (readers paste snippets into scripts)")
        exec(code, namespace)
        app = namespace.get("app")
        if (
            isinstance(app, App)
            and (app.tasks or app.subscribers)
            and not any(background.app is app for background in workers)
        ):
            workers.append(BackgroundWorker(app))


def test_every_document_with_code_is_checked() -> None:
    with_code = {d.name for d in DOCUMENTS if snippets(d)}
    assert {"README.md", "tasks.md", "streams.md"} <= with_code
