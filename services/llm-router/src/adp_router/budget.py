"""Budget gate: a local copy of the cost service's BudgetState entries (KV bucket `budget`), kept fresh by a
KV watch, so checking a request costs no round-trip."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from nats.js.kv import KeyValue

from adp_common.schemas.cost import BudgetState

log = logging.getLogger("adp.router.budget")


def is_exceeded(state: BudgetState | None, today: str) -> bool:
    """Exceeded today (a state left over from an earlier UTC day does not block)."""
    if state is None or not state.exceeded:
        return False
    return not (len(state.day) == 10 and state.day < today)


class BudgetGate:
    def __init__(self, kv: KeyValue | None) -> None:
        self.kv = kv
        self.states: dict[str, BudgetState] = {}
        self._watcher: KeyValue.KeyWatcher | None = None
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()

    async def start(self) -> None:
        if self.kv is None:
            self.synced.set()
            return
        self._watcher = await self.kv.watchall()
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        assert self._watcher is not None
        async for entry in self._watcher:
            if entry is None:
                self.synced.set()
                continue
            try:
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    self.states.pop(entry.key, None)
                else:
                    self.states[entry.key] = BudgetState.model_validate_json(entry.value)
            except Exception as err:
                log.warning("bad budget entry %s: %s", entry.key, err)

    async def stop(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()  # type: ignore[no-untyped-call]  # unannotated in nats-py
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def exceeded_scope(self, user_id: str | None, key_id: str | None = None) -> str | None:
        """'global', 'user.<id>' or 'key.<id>' (an API key's own budget) when that budget is exceeded today,
        else None."""
        today = datetime.now(UTC).date().isoformat()
        if is_exceeded(self.states.get("global"), today):
            return "global"
        for kind, ident in (("user", user_id), ("key", key_id)):
            if ident and is_exceeded(self.states.get(f"{kind}.{ident}"), today):
                return f"{kind}.{ident}"
        return None
