"""RepeatClock: one task runs every registered action on its period, and a restart keeps a single clock."""

from __future__ import annotations

import asyncio

from adp_common.clock import RepeatClock


async def test_actions_repeat_until_removed_and_the_clock_ends_with_them() -> None:
    clock = RepeatClock(0.05, checks=5)
    runs: list[str] = []

    async def tick(name: str) -> None:
        runs.append(name)

    clock.add("a", lambda: tick("a"))
    await asyncio.sleep(0.18)
    assert 2 <= runs.count("a") <= 4
    clock.remove("a")
    await asyncio.sleep(0.05)
    assert clock.task is None and len(clock) == 0


async def test_a_stopped_clock_restarted_at_once_stays_one_clock() -> None:
    clock = RepeatClock(0.05, checks=5)
    runs: list[str] = []

    async def tick() -> None:
        runs.append("x")

    clock.add("x", tick)
    await asyncio.sleep(0.02)
    clock.stop()
    clock.add("x", tick)  # before the stopped task has wound down
    second = clock.task
    await asyncio.sleep(0.01)
    assert clock.task is second is not None  # the old task's exit did not drop the new one
    await asyncio.sleep(0.2)
    clock.stop()
    assert 3 <= len(runs) <= 5  # one clock's worth of runs, not two
