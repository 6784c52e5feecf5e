"""Whether a failed job runs again, and after how long. Pure: no I/O, no clock.

The randomness comes in as a ``random.Random`` so that tests can fix the seed, and so that
jitter (which spreads a burst of failures out instead of retrying them in lockstep) stays
deterministic under test.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, Protocol, runtime_checkable

from conveyor.errors import ConfigError, PermanentError, Retry, TemporaryError, ValidationError

Jitter = Literal["full", "equal", "none"]


def _check_seconds(what: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0 <= value < math.inf):
        raise ConfigError(f"{what} must be a finite number of seconds >= 0, not {value!r}")


@runtime_checkable
class Backoff(Protocol):
    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        ...


@dataclass(frozen=True, slots=True)
class Exponential:
    """``base * factor ** (attempt - 1)`` seconds, at most ``cap``, then jittered.

    Full jitter (a uniform pick in ``[0, d]``) is the default because it spreads clients
    that failed together the most; ``equal`` keeps at least ``d / 2``; ``none`` is exact.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: Jitter = "full"

    def __post_init__(self) -> None:
        _check_seconds("base", self.base)
        _check_seconds("cap", self.cap)
        if not self.factor >= 1:
            raise ConfigError(f"backoff factor must be >= 1, not {self.factor}")
        if self.cap < self.base:
            raise ConfigError(f"backoff cap {self.cap} is below base {self.base}; raise it")
        if self.jitter not in ("full", "equal", "none"):
            raise ConfigError(f"jitter must be 'full', 'equal' or 'none', not {self.jitter!r}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        try:
            growth = self.factor ** (attempt - 1)
        except OverflowError:
            growth = math.inf
        ceiling = min(self.cap, self.base * growth) if self.base else 0.0
        if self.jitter == "full":
            return rng.uniform(0, ceiling)
        if self.jitter == "equal":
            return ceiling / 2 + rng.uniform(0, ceiling / 2)
        return ceiling


@dataclass(frozen=True, slots=True)
class Delays:
    """An explicit list of delays, e.g. ``[60, 300, 900]``; later retries reuse the last."""

    delays: Sequence[float]

    def __post_init__(self) -> None:
        if not self.delays:
            raise ConfigError("backoff delays list is empty; give at least one delay in seconds")
        for delay in self.delays:
            _check_seconds("backoff delay", delay)
        object.__setattr__(self, "delays", tuple(float(delay) for delay in self.delays))

    def delay(self, attempt: int, rng: random.Random) -> float:
        return self.delays[min(attempt, len(self.delays)) - 1]


@dataclass(frozen=True, slots=True)
class Fixed:
    """The same delay before every retry."""

    seconds: float

    def __post_init__(self) -> None:
        _check_seconds("backoff delay", self.seconds)

    def delay(self, attempt: int, rng: random.Random) -> float:
        return self.seconds


def backoff_from(value: object) -> Backoff:
    """The backoff a task option names: a Backoff, seconds (Fixed), a list (Delays) or None.

    Raises:
        ConfigError: anything else, or invalid delays.
    """
    if value is None:
        return Exponential()
    if isinstance(value, Backoff):
        return value
    if isinstance(value, int | float | timedelta) and not isinstance(value, bool):
        return Fixed(value.total_seconds() if isinstance(value, timedelta) else value)
    if isinstance(value, list | tuple):
        return Delays(value)
    raise ConfigError(
        f"backoff={value!r}: give seconds, a list of seconds, a Backoff such as "
        "Exponential(base=1, cap=300), or None for the default"
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """What :meth:`RetryPolicy.decide` concluded; ``reason`` tells people why, in logs."""

    retry: bool
    delay: float
    reason: str
    exhausted: bool = False
    """Not retried because the retries ran out (else the error is never retried)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A task's retry rules: how many retries, how far apart, and for which errors."""

    max_retries: int = 3
    backoff: Backoff = Exponential()
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    dont_retry_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise ConfigError(f"max_retries must be a whole number, not {self.max_retries!r}")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0 (0: never retry), not {self.max_retries}")
        for kind in self.retry_on + self.dont_retry_on:
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise ConfigError(f"retry_on/dont_retry_on take exception classes, not {kind!r}")

    def decide(self, error: BaseException, attempt: int, rng: random.Random) -> Decision:
        """Whether to retry after attempt number ``attempt`` (1-based) failed with ``error``.

        What the task raised to steer retries wins over the policy's error lists:
        PermanentError and ValidationError never retry; Retry and TemporaryError always do,
        after their own delay if they give one, else the backoff's. Every retry, asked for
        or not, counts against ``max_retries``, so a task cannot loop forever.
        """
        name = type(error).__name__
        if isinstance(error, PermanentError | ValidationError):
            return Decision(False, 0.0, f"permanent: {name} is never retried")
        if isinstance(error, Retry | TemporaryError):
            asked = error.delay
        elif isinstance(error, self.dont_retry_on):
            return Decision(False, 0.0, f"{name} is in dont_retry_on")
        elif not isinstance(error, self.retry_on):
            return Decision(False, 0.0, f"{name} is not in retry_on")
        else:
            asked = None
        if attempt > self.max_retries:
            plural = "s" if attempt != 1 else ""
            reason = f"retries exhausted after {attempt} attempt{plural}"
            return Decision(False, 0.0, reason, exhausted=True)
        delay = self.backoff.delay(attempt, rng) if asked is None else max(0.0, asked)
        return Decision(True, delay, f"retry {attempt} of {self.max_retries} in {delay:g}s")
