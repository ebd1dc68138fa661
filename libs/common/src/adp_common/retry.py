"""The platform's one retry policy: a number of tries and an exponential pause between them, configured
per use. `Backoff.pause` gives the pause before retry number n (also where the retry happens elsewhere,
e.g. a JetStream redelivery after a nak); `retry` runs an async call under a policy.

A plain loop, not tenacity's `AsyncRetrying`: that object and its call state reference each other, so every
call would leave a cycle (with whatever the call holds) to the cyclic garbage collector, which a busy service
runs rarely."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """`attempts` tries in all; before retry n (n = 1 after the first failure) a pause of
    min(initial_s * multiplier^(n-1), max_s), drawn from [half, all] of it with `jitter`."""

    initial_s: float
    max_s: float
    attempts: int = 1
    multiplier: float = 2.0
    jitter: bool = False

    def pause(self, retry: int) -> float:
        base = min(self.initial_s * self.multiplier ** max(retry - 1, 0), self.max_s)
        return base * random.uniform(0.5, 1.0) if self.jitter else base


async def retry(
    policy: Backoff,
    call: Callable[[], Awaitable[T]],
    *,
    retry_on: tuple[type[BaseException], ...],
    deadline: float | None = None,
) -> T:
    """Await `call()` up to `policy.attempts` times while it raises one of `retry_on`, pausing between
    tries. The last error is raised as is; so is one whose pause would reach `deadline` (time.monotonic)."""
    tries = 0
    while True:
        tries += 1
        try:
            return await call()
        except retry_on:
            pause = policy.pause(tries)
            if tries >= policy.attempts or (deadline is not None and time.monotonic() + pause >= deadline):
                raise
        await asyncio.sleep(pause)
