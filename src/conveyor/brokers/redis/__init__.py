"""Job records and results in Redis (``results_url="redis://..."``), for brokers that keep
none of their own: ``RedisResultStore`` in ``results``, its key layout in ``keys``."""

from __future__ import annotations

from conveyor.brokers.redis.results import RedisResultStore

__all__ = ["RedisResultStore"]
