"""Backoff delays and the retry decision, by example and by property."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.errors import (
    ConfigError,
    PermanentError,
    Retry,
    TemporaryError,
    ValidationError,
)
from conveyor.retry import (
    Backoff,
    Decision,
    Delays,
    Exponential,
    Fixed,
    RetryPolicy,
    backoff_from,
)

RNG = random.Random(0)


def test_exponential_without_jitter_doubles_up_to_the_cap() -> None:
    backoff = Exponential(base=1.0, factor=2.0, cap=10.0, jitter="none")
    assert [backoff.delay(n, RNG) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert Exponential(base=0.5, factor=3, cap=100, jitter="none").delay(3, RNG) == 4.5


def test_exponential_far_past_the_cap_does_not_overflow() -> None:
    assert Exponential(jitter="none").delay(100_000, RNG) == 300.0
    assert Exponential(base=0, cap=0, jitter="none").delay(100_000, RNG) == 0.0


def test_a_constant_factor_gives_a_constant_delay() -> None:
    backoff = Exponential(base=5, factor=1, cap=60, jitter="none")
    assert {backoff.delay(n, RNG) for n in range(1, 20)} == {5.0}


def test_delays_follow_the_list_then_repeat_the_last() -> None:
    backoff = Delays([60, 300, 900])
    assert [backoff.delay(n, RNG) for n in range(1, 6)] == [60, 300, 900, 900, 900]
    assert backoff.delays == (60.0, 300.0, 900.0)


def test_fixed_is_the_same_every_time() -> None:
    assert {Fixed(7.5).delay(n, RNG) for n in range(1, 10)} == {7.5}


settings_of_exponential = st.builds(
    Exponential,
    base=st.floats(0, 10),
    factor=st.floats(1, 10),
    cap=st.floats(10, 1000),
)


@given(settings_of_exponential, st.integers(1, 2000), st.randoms(use_true_random=False))
def test_full_jitter_stays_between_zero_and_the_unjittered_delay(
    backoff: Exponential, attempt: int, rng: random.Random
) -> None:
    ceiling = Exponential(backoff.base, backoff.factor, backoff.cap, "none").delay(attempt, rng)
    assert 0 <= backoff.delay(attempt, rng) <= ceiling <= backoff.cap


@given(settings_of_exponential, st.integers(1, 2000), st.randoms(use_true_random=False))
def test_equal_jitter_stays_between_half_and_all_of_the_delay(
    backoff: Exponential, attempt: int, rng: random.Random
) -> None:
    ceiling = Exponential(backoff.base, backoff.factor, backoff.cap, "none").delay(attempt, rng)
    equal = Exponential(backoff.base, backoff.factor, backoff.cap, "equal")
    assert ceiling / 2 <= equal.delay(attempt, rng) <= ceiling


@given(settings_of_exponential, st.integers(1, 2000))
def test_unjittered_delays_never_shrink_and_never_pass_the_cap(
    backoff: Exponential, attempt: int
) -> None:
    exact = Exponential(backoff.base, backoff.factor, backoff.cap, "none")
    assert exact.delay(attempt, RNG) <= exact.delay(attempt + 1, RNG) <= backoff.cap


def test_jitter_comes_only_from_the_rng_passed_in() -> None:
    backoff = Exponential(base=1, cap=100)
    first = [backoff.delay(n, random.Random(42)) for n in range(1, 8)]
    assert first == [backoff.delay(n, random.Random(42)) for n in range(1, 8)]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Exponential(base=-1), "base must be a finite number of seconds >= 0"),
        (lambda: Exponential(base=float("nan")), "base must be a finite number"),
        (lambda: Exponential(cap=float("inf")), "cap must be a finite number"),
        (lambda: Exponential(factor=0.5), "factor must be >= 1"),
        (lambda: Exponential(factor=float("nan")), "factor must be >= 1"),
        (lambda: Exponential(base=10, cap=5), "cap 5 is below base 10"),
        (lambda: Exponential(jitter="half"), "jitter must be 'full', 'equal' or 'none'"),  # type: ignore[arg-type]
        (lambda: Delays([]), "empty; give at least one delay"),
        (lambda: Delays([60, -1]), "delay must be a finite number of seconds >= 0, not -1"),
        (lambda: Delays([60, "5"]), "not '5'"),  # type: ignore[list-item]
        (lambda: Fixed(float("nan")), "delay must be a finite number"),
        (lambda: RetryPolicy(max_retries=-1), "max_retries must be >= 0"),
        (lambda: RetryPolicy(max_retries=2.5), "max_retries must be a whole number"),  # type: ignore[arg-type]
        (lambda: RetryPolicy(max_retries=True), "max_retries must be a whole number"),
        (lambda: RetryPolicy(retry_on=(ValueError, "x")), "take exception classes, not 'x'"),  # type: ignore[arg-type]
        (lambda: RetryPolicy(dont_retry_on=(int,)), "take exception classes"),  # type: ignore[arg-type]
    ],
)
def test_invalid_settings_are_refused_saying_what_to_fix(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


def test_backoff_from_reads_every_accepted_form() -> None:
    custom = Delays([1])
    assert backoff_from(None) == Exponential()
    assert backoff_from(custom) is custom
    assert backoff_from(30) == Fixed(30)
    assert backoff_from(2.5) == Fixed(2.5)
    assert backoff_from(timedelta(minutes=1)) == Fixed(60)
    assert backoff_from([60, 300]) == Delays([60, 300])
    assert backoff_from((1, 2)) == Delays([1, 2])
    for bad in ("60", True, {"base": 1}):
        with pytest.raises(ConfigError, match="give seconds, a list of seconds, a Backoff"):
            backoff_from(bad)


def test_the_three_backoffs_satisfy_the_protocol() -> None:
    backoffs: list[Backoff] = [Exponential(), Delays([1]), Fixed(1)]
    assert all(isinstance(backoff, Backoff) for backoff in backoffs)


# --- RetryPolicy.decide ---------------------------------------------------------------

POLICY = RetryPolicy(max_retries=3, backoff=Delays([10, 20, 30]))


def decide(error: BaseException, attempt: int = 1, policy: RetryPolicy = POLICY) -> Decision:
    return policy.decide(error, attempt, random.Random(0))


@pytest.mark.parametrize(
    "error", [PermanentError("no"), ValidationError("send_mail", "to", "is missing")]
)
def test_permanent_and_validation_errors_are_never_retried(error: Exception) -> None:
    decision = decide(error, policy=RetryPolicy(retry_on=(Exception,)))
    assert decision == Decision(False, 0.0, f"permanent: {type(error).__name__} is never retried")


def test_retry_uses_the_delay_the_task_asked_for() -> None:
    decision = decide(Retry(delay=42), attempt=2)
    assert (decision.retry, decision.delay) == (True, 42)
    assert "retry 2 of 3 in 42s" in decision.reason


def test_retry_still_counts_against_max_retries() -> None:
    decision = decide(Retry(delay=1), attempt=4)
    assert decision == Decision(False, 0.0, "retries exhausted after 4 attempts", exhausted=True)


def test_temporary_error_with_a_delay_uses_it() -> None:
    assert decide(TemporaryError("503", delay=7), attempt=1).delay == 7


def test_temporary_error_without_a_delay_uses_the_backoff() -> None:
    assert decide(TemporaryError("503"), attempt=2).delay == 20


def test_asked_for_delays_below_zero_become_zero() -> None:
    assert decide(Retry(delay=-5)).delay == 0.0
    assert decide(TemporaryError(delay=float("nan"))).delay == 0.0


def test_task_steering_errors_override_the_policy_lists() -> None:
    policy = RetryPolicy(retry_on=(KeyError,), dont_retry_on=(TemporaryError, Retry))
    assert decide(TemporaryError(), policy=policy).retry
    assert decide(Retry(), policy=policy).retry


def test_errors_in_dont_retry_on_are_not_retried() -> None:
    policy = RetryPolicy(retry_on=(Exception,), dont_retry_on=(KeyError,))
    assert decide(KeyError("k"), policy=policy) == Decision(
        False, 0.0, "KeyError is in dont_retry_on"
    )
    assert decide(ValueError(), policy=policy).retry


def test_errors_outside_retry_on_are_not_retried() -> None:
    policy = RetryPolicy(retry_on=(ConnectionError,))
    assert decide(ValueError(), policy=policy) == Decision(
        False, 0.0, "ValueError is not in retry_on"
    )
    assert decide(ConnectionResetError(), policy=policy).retry
    assert not decide(KeyboardInterrupt()).retry  # not an Exception: the default lets it go


@pytest.mark.parametrize(
    ("attempt", "retry", "delay"), [(1, True, 10), (2, True, 20), (3, True, 30), (4, False, 0)]
)
def test_ordinary_errors_back_off_until_retries_are_exhausted(
    attempt: int, retry: bool, delay: float
) -> None:
    decision = decide(ValueError("boom"), attempt=attempt)
    assert (decision.retry, decision.delay) == (retry, delay)
    expected = f"retry {attempt} of 3" if retry else "retries exhausted after 4"
    assert decision.reason.startswith(expected)
    assert decision.exhausted is not retry


def test_zero_max_retries_never_retries() -> None:
    assert decide(ValueError(), policy=RetryPolicy(max_retries=0)) == Decision(
        False, 0.0, "retries exhausted after 1 attempt", exhausted=True
    )


def test_the_default_policy_retries_three_times_with_jittered_exponential_backoff() -> None:
    policy = RetryPolicy()
    delays = [policy.decide(ValueError(), n, random.Random(n)).delay for n in (1, 2, 3)]
    assert all(0 <= d <= 2 ** (n - 1) for n, d in enumerate(delays, start=1))
    assert not policy.decide(ValueError(), 4, random.Random(0)).retry
