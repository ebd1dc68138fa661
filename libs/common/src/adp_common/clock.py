"""One clock for many repeating actions (keepalives, ack extensions): a timer task per item woke the event
loop, and wrote to NATS, once per item; one clock looks a few times per period and runs the due actions
together, so their messages leave in one socket write."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable

Action = Callable[[], Awaitable[None]]


class RepeatClock:
    """Runs each added action every `every_s` (from when it was added) until it is removed, checking
    `checks` times per period (an action runs up to every_s / checks late). A failing action is skipped
    until its next turn. The clock's task runs only while actions are registered."""

    def __init__(self, every_s: float, checks: int = 4) -> None:
        self.every_s = every_s
        self.checks = checks
        self.calls: dict[Hashable, tuple[Action, float]] = {}  # key -> action, when it last ran (or was added)
        self.task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self.calls)

    def add(self, key: Hashable, action: Action) -> None:
        self.calls[key] = (action, time.monotonic())
        if self.task is None:
            self.task = asyncio.create_task(self._run())

    def remove(self, key: Hashable) -> None:
        self.calls.pop(key, None)

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        try:
            while self.calls:
                await asyncio.sleep(self.every_s / self.checks)
                now = time.monotonic()
                for key, (action, last) in list(self.calls.items()):
                    if now - last >= self.every_s and key in self.calls:
                        self.calls[key] = (action, now)
                        with contextlib.suppress(Exception):
                            await action()
        finally:
            # only if still ours: after stop(), add() may already have started the next clock
            if self.task is asyncio.current_task():
                self.task = None
