"""The retry policy: pauses, the number of tries, what is retried and the deadline."""

from __future__ import annotations

import time

import pytest

from adp_common.retry import Backoff, retry


def test_pauses_grow_exponentially_up_to_the_cap() -> None:
    policy = Backoff(initial_s=0.5, max_s=5.0)
    assert [policy.pause(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert [Backoff(initial_s=0.05, max_s=0.5, multiplier=4).pause(n) for n in (1, 2, 3)] == [0.05, 0.2, 0.5]


def test_jitter_draws_from_half_to_all_of_the_pause() -> None:
    policy = Backoff(initial_s=1.0, max_s=30.0, jitter=True)
    pauses = [policy.pause(3) for _ in range(200)]
    assert all(2.0 <= p <= 4.0 for p in pauses) and len(set(pauses)) > 1


async def test_retries_until_success_within_the_attempts() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("not yet")
        return "ok"

    assert await retry(Backoff(initial_s=0.001, max_s=0.01, attempts=3), flaky, retry_on=(ConnectionError,)) == "ok"
    assert calls == 3


async def test_the_last_error_is_raised_and_others_are_not_retried() -> None:
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError(f"try {calls}")

    with pytest.raises(ConnectionError, match="try 2"):
        await retry(Backoff(initial_s=0.001, max_s=0.01, attempts=2), failing, retry_on=(ConnectionError,))

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("not a transient failure")

    calls = 0
    with pytest.raises(ValueError):
        await retry(Backoff(initial_s=0.001, max_s=0.01, attempts=5), broken, retry_on=(ConnectionError,))
    assert calls == 1


async def test_no_pause_reaches_past_the_deadline() -> None:
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise TimeoutError

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await retry(
            Backoff(initial_s=0.2, max_s=1.0, attempts=10), failing, retry_on=(TimeoutError,), deadline=started + 0.5
        )
    assert calls == 2 and time.monotonic() - started < 0.5  # 0.2 s paused, the next 0.4 s would pass it
