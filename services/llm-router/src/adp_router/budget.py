"""Budget gate: a local copy of the cost service's BudgetState entries (KV bucket `budget`), kept fresh by a
KV watch, so checking a request costs no round-trip."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from nats.js.kv import KeyValue

from adp_common.bus import KVWatch
from adp_common.schemas.cost import BudgetState

log = logging.getLogger("adp.router.budget")


def is_exceeded(state: BudgetState | None, today: str) -> bool:
    """Exceeded today (a state left over from an earlier UTC day does not block)."""
    if state is None or not state.exceeded:
        return False
    return not (len(state.day) == 10 and state.day < today)


class BudgetGate:
    """Today's budget states, followed from the budget KV bucket (written by the cost service)."""

    def __init__(self, kv: KeyValue | None) -> None:
        self.kv = kv
        self.states: dict[str, BudgetState] = {}
        self._watch = KVWatch(kv, self._put, self._delete, what="budget")
        self.synced = self._watch.synced

    def _put(self, key: str, value: bytes, _revision: int) -> None:
        self.states[key] = BudgetState.model_validate_json(value)

    def _delete(self, key: str) -> None:
        self.states.pop(key, None)

    async def start(self) -> None:
        await self._watch.start()

    async def stop(self) -> None:
        await self._watch.stop()

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
