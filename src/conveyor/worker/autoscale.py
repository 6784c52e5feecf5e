"""How many worker processes to run for a queue depth. Pure: the supervisor brings the clock.

Scaling up is immediate, because a growing backlog costs latency now; scaling down waits
out a cooldown, because a backlog that drains in bursts would otherwise make processes
start and stop in a loop (each start pays for imports and a broker connection).
"""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.errors import ConfigError


@dataclass(frozen=True, slots=True)
class AutoscaleRules:
    """Run ``minimum`` processes below ``low`` waiting jobs, ``maximum`` above ``high``.

    Between the two the count grows linearly with the depth, rounded up, so any backlog
    past ``low`` gets help.
    """

    minimum: int
    maximum: int
    low: int = 50
    high: int = 500
    cooldown: float = 30.0

    def __post_init__(self) -> None:
        for name in ("minimum", "maximum", "low", "high"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"autoscale {name} must be a whole number, not {value!r}")
        if not 1 <= self.minimum <= self.maximum:
            raise ConfigError(
                f"autoscale needs 1 <= minimum <= maximum, not {self.minimum}:{self.maximum}"
            )
        if not 0 <= self.low < self.high:
            raise ConfigError(
                f"autoscale needs 0 <= low < high queue depths, not low={self.low} high={self.high}"
            )
        if not (isinstance(self.cooldown, int | float) and self.cooldown >= 0):
            raise ConfigError(f"autoscale cooldown must be >= 0 seconds, not {self.cooldown!r}")

    @classmethod
    def parse(cls, text: str) -> AutoscaleRules:
        """Read the CLI's ``--autoscale MIN:MAX``, e.g. ``2:8``; depths keep their defaults.

        Raises:
            ConfigError: the text is not two whole numbers around a colon, or they are out
                of order.
        """
        parts = text.split(":")
        if len(parts) != 2 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
            raise ConfigError(
                f"--autoscale expects MIN:MAX, two whole numbers such as 2:8, not {text!r}"
            )
        return cls(int(parts[0]), int(parts[1]))

    def desired(self, depth: int) -> int:
        """The process count a queue depth calls for, ignoring the cooldown."""
        if depth <= self.low:
            return self.minimum
        if depth >= self.high:
            return self.maximum
        share = (depth - self.low) * (self.maximum - self.minimum)
        return self.minimum + -(-share // (self.high - self.low))  # exact ceiling division


def decide(
    rules: AutoscaleRules, depth: int, current: int, now: float, last_change: float | None
) -> int:
    """The number of processes to run now, given ``current`` and the last change's time.

    Args:
        rules: the bounds, thresholds and cooldown.
        depth: jobs waiting in the queues this worker consumes.
        current: processes running now; a count outside the bounds is brought inside at once.
        now: the current time on the clock ``last_change`` was read from (monotonic seconds).
        last_change: when the count last changed, or None if it never has.
    """
    target = rules.desired(depth)
    current = min(max(current, rules.minimum), rules.maximum)
    if target >= current:
        return target
    if last_change is None or now - last_change >= rules.cooldown:
        return target
    return current
