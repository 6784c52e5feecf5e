"""The HTTP server: a JSON API, Prometheus metrics and a health check for one App.

Needs the ``server`` extra (FastAPI and uvicorn); run it with ``conveyor serve MODULE:APP``.
"""

from conveyor.server.app import create_server
from conveyor.server.settings import AlertThresholds, ServerSettings

__all__ = ["AlertThresholds", "ServerSettings", "create_server"]
