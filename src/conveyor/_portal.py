"""One background event loop thread that gives async code a blocking form.

Sync callers (scripts, WSGI views, the REPL) submit coroutines to the portal and wait for
the result; the async implementation stays the only one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Portal:
    def __init__(self, name: str = "conveyor-portal") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the portal's loop and block until it finishes."""
        if not self._thread.is_alive():
            coroutine.close()
            raise RuntimeError("the portal is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def acall(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the portal's loop and await it from another loop."""
        if not self._thread.is_alive():
            coroutine.close()
            raise RuntimeError("the portal is closed")
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._loop))

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()
