"""What both window operators report."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One key's aggregate over one window: ``count`` events whose values add up to ``total``.

    Tumbling windows cover ``[start, end)``; a sliding window covers ``(start, end]``.
    """

    key: str
    start: float
    end: float
    count: int
    total: float
