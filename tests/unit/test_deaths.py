"""The x-death history a dead letter carries, and what counts as a dead-letter cycle."""

from __future__ import annotations

from conveyor.brokers.types import DeadLetterReason
from conveyor.deaths import is_cycle, with_death


def _died(headers: dict[str, object], queue: str, reason: DeadLetterReason) -> dict[str, object]:
    return with_death(
        headers, queue=queue, reason=reason, now=12.5, exchange="ex", routing_key="rk", ttl=None
    )


def test_a_first_death_is_recorded_with_where_and_why() -> None:
    headers = with_death(
        {"task": "t"},
        queue="orders",
        reason=DeadLetterReason.EXPIRED,
        now=12.5,
        exchange="shop",
        routing_key="order.paid",
        ttl=1.5,
    )
    assert headers["task"] == "t"
    assert headers["x-death"] == [
        {
            "queue": "orders",
            "reason": "expired",
            "count": 1,
            "time": 12.5,
            "exchange": "shop",
            "routing-keys": ["order.paid"],
            "original-expiration": "1500",
        }
    ]
    assert (headers["x-first-death-queue"], headers["x-first-death-reason"]) == (
        "orders",
        "expired",
    )
    assert headers["x-first-death-exchange"] == "shop"


def test_dying_again_the_same_way_counts_up_and_moves_to_the_front() -> None:
    once = _died({}, "a", DeadLetterReason.REJECTED)
    elsewhere = _died(once, "b", DeadLetterReason.EXPIRED)
    again = _died(elsewhere, "a", DeadLetterReason.REJECTED)
    assert [(d["queue"], d["count"]) for d in again["x-death"]] == [("a", 2), ("b", 1)]  # type: ignore[attr-defined]
    assert again["x-first-death-queue"] == "a"


def test_a_return_to_a_queue_it_died_in_is_a_cycle_unless_rejected_on_the_way() -> None:
    expired = _died({}, "a", DeadLetterReason.EXPIRED)
    assert is_cycle("a", expired)
    assert not is_cycle("b", expired)
    assert not is_cycle("a", _died(expired, "b", DeadLetterReason.REJECTED))
