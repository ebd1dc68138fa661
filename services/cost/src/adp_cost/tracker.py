"""Budget tracking: recompute budget state from the rollup (so every copy agrees), write it to the budget KV
bucket (compare-and-set, never overwriting a newer total), and fire each once-a-day budget event exactly once
(unique row in budget_events, then publish with a de-duplicating Nats-Msg-Id; unpublished rows are retried)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from datetime import date

import asyncpg
from nats.js.errors import InvalidKeyError, KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from adp_common.bus import Bus, answered
from adp_common.catalog import KV_BUDGET
from adp_common.schemas.cost import BudgetState, SetBudget
from adp_common.schemas.money import format_money
from adp_common.schemas.ops import BudgetEvent
from adp_cost import store
from adp_cost.budget import (
    GLOBAL,
    Budget,
    Clock,
    Evaluation,
    key_scope,
    kv_key,
    scope_of_key,
    should_replace,
    user_scope,
    utc_day,
)
from adp_cost.pricing import usd_to_nusd
from adp_cost.settings import CostSettings

log = logging.getLogger("adp.cost.budget")

OnEvaluation = Callable[[Evaluation], None]


def event_msg_id(scope: str, day: date, kind: str) -> str:
    return f"budget:{scope}:{day.isoformat()}:{kind}"


class BudgetTracker:
    def __init__(
        self,
        bus: Bus,
        pool: asyncpg.Pool,
        settings: CostSettings,
        clock: Clock,
        on_evaluation: OnEvaluation | None = None,
    ) -> None:
        self.bus = bus
        self.pool = pool
        self.settings = settings
        self.clock = clock
        self.on_evaluation = on_evaluation
        self.kv: KeyValue | None = None
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._last_day: date | None = None
        self._task: asyncio.Task[None] | None = None
        self.events_published = 0

    # ---- lifecycle ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.kv = await self.bus.kv(KV_BUDGET)
        # safe to repeat (events are recorded once); a leader election at start must not stop the service
        await answered(self.refresh_all, "budget refresh")
        self._task = asyncio.create_task(self._dirty_loop(), name="cost-budget-dirty")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._dirty:  # flush what the last batches changed
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._flush(), 5)

    def today(self) -> date:
        return utc_day(self.clock())

    def mark(self, days: Iterable[date], user_ids: Iterable[str], key_ids: Iterable[str] = ()) -> None:
        """Usage for these days, users and keys was committed; recompute today's affected budgets soon."""
        if self.today() not in set(days):
            return
        self._dirty.add(GLOBAL)
        self._dirty.update(user_scope(u) for u in user_ids if u)
        self._dirty.update(key_scope(k) for k in key_ids if k)
        self._wake.set()

    async def _dirty_loop(self) -> None:
        while True:
            await self._wake.wait()
            if self.settings.cost_budget_debounce_s:
                await asyncio.sleep(self.settings.cost_budget_debounce_s)
            try:
                await self._flush()
            except Exception:
                log.exception("budget update failed; the periodic refresh will retry")

    async def _flush(self) -> None:
        self._wake.clear()
        scopes, self._dirty = self._dirty, set()
        if scopes:
            await self.evaluate(scopes)

    # ---- evaluation ---------------------------------------------------------------------------------------------
    async def budgets(self, scopes: Iterable[str]) -> dict[str, Budget]:
        """Effective budget per scope: stored row, else the configured default (users: only when configured)."""
        wanted = list(dict.fromkeys(scopes))
        stored = await store.get_budgets(self.pool, wanted)
        out: dict[str, Budget] = {}
        default_user = self.settings.cost_user_daily_budget_usd
        for scope in wanted:
            if scope in stored:
                limit, threshold = stored[scope]
                out[scope] = Budget(scope, limit, threshold)
            elif scope == GLOBAL:
                out[scope] = Budget(
                    scope, usd_to_nusd(self.settings.cost_daily_budget_usd), self.settings.cost_budget_threshold
                )
            elif default_user is not None and scope.startswith("user:"):  # keys have only stored budgets
                out[scope] = Budget(scope, usd_to_nusd(default_user), self.settings.cost_budget_threshold)
        return out

    async def compute(self, scopes: Iterable[str], day: date | None = None) -> list[Evaluation]:
        """Current evaluations (no side effects) for the scopes that have a budget."""
        day = day or self.today()
        budgets = await self.budgets(scopes)
        users = [s.removeprefix("user:") for s in budgets if s.startswith("user:")]
        keys = [s.removeprefix("key:") for s in budgets if s.startswith("key:")]
        spent: dict[str, int] = {}
        if GLOBAL in budgets:
            spent[GLOBAL] = await store.global_spend(self.pool, day)
        if users:
            for u, v in (await store.user_spend(self.pool, day, users)).items():
                spent[user_scope(u)] = v
        if keys:
            for k, v in (await store.key_spend(self.pool, day, keys)).items():
                spent[key_scope(k)] = v
        return [Evaluation(s, day, spent.get(s, 0), b.limit_nusd, b.threshold) for s, b in budgets.items()]

    async def evaluate(self, scopes: Iterable[str]) -> list[Evaluation]:
        """Recompute, write KV, fire due events once."""
        async with self._lock:
            evaluations = await self.compute(scopes)
            for ev in evaluations:
                await self._write_kv(ev.state())
                for kind in ev.due_events():
                    await self._fire(ev, kind)
                if self.on_evaluation is not None:
                    self.on_evaluation(ev)
            return evaluations

    async def refresh_all(self) -> None:
        """Periodic: global, every stored user budget, users who spent today (with a default user budget), and on
        a new day every user key in KV (so yesterday's totals roll over to zero)."""
        day = self.today()
        scopes: set[str] = {GLOBAL}
        scopes.update(await store.user_budget_scopes(self.pool))
        if self.settings.cost_user_daily_budget_usd is not None:
            rows = await self.pool.fetch(
                "SELECT user_key FROM cost_daily_by_user WHERE day = $1 AND user_key <> ''", day
            )
            scopes.update(user_scope(r["user_key"]) for r in rows)
        if day != self._last_day and self.kv is not None:
            with contextlib.suppress(NoKeysError):
                scopes.update(scope_of_key(k) for k in await self.kv.keys() if k.startswith(("user.", "key.")))
        await self.evaluate(scopes)
        self._last_day = day
        await self.publish_outbox()

    async def _write_kv(self, state: BudgetState) -> None:
        assert self.kv is not None
        key = kv_key(state.scope)
        data = state.model_dump_json().encode()
        for _ in range(10):
            try:
                entry = await self.kv.get(key)
                current = BudgetState.model_validate_json(entry.value) if entry.value else None
                revision: int | None = entry.revision
            except KeyNotFoundError:  # also a deleted key
                current, revision = None, None
            except InvalidKeyError:
                log.warning("budget scope %s has no valid KV key; state not published", state.scope)
                return
            if not should_replace(current, state):
                return
            try:
                if revision is None:
                    await self.kv.create(key, data)
                else:
                    await self.kv.update(key, data, last=revision)
                return
            except KeyWrongLastSequenceError:
                continue  # another copy wrote in between: re-read and decide again
        log.warning("budget KV %s: gave up after repeated concurrent updates", key)

    async def _fire(self, ev: Evaluation, kind: str) -> None:
        if not await store.record_event(self.pool, ev.scope, ev.day, kind, ev.spent_nusd, ev.limit_nusd, ev.percentage):
            return  # already recorded (by this or another copy); the outbox publishes it if needed
        state = ev.state()
        event = BudgetEvent(
            scope=ev.scope,
            day=ev.day.isoformat(),
            kind=kind,
            spent_usd=format_money(state.spent_usd),
            limit_usd=format_money(state.limit_usd),
            percentage=ev.percentage,
        )
        await self._publish(event, ev.day)

    async def _publish(self, event: BudgetEvent, day: date) -> None:
        try:
            await self.bus.publish_event(
                self.bus.catalog.ops("budget"), event, msg_id=event_msg_id(event.scope, day, event.kind)
            )
        except Exception as err:
            log.warning("budget event %s/%s not published yet (%s); will retry", event.scope, event.kind, err)
            return
        await store.mark_published(self.pool, event.scope, day, event.kind)
        self.events_published += 1
        log.info("budget %s %s: %s of %s USD", event.scope, event.kind, event.spent_usd, event.limit_usd)

    async def publish_outbox(self, older_than_s: float = 5.0) -> None:
        for r in await store.unpublished_events(self.pool, older_than_s):
            pct = float(r["percentage"])
            ev = Evaluation(r["scope"], r["day"], int(r["spent_nusd"]), int(r["limit_nusd"]), 0.8)
            state = ev.state()
            event = BudgetEvent(
                scope=r["scope"],
                day=r["day"].isoformat(),
                kind=r["kind"],
                spent_usd=format_money(state.spent_usd),
                limit_usd=format_money(state.limit_usd),
                percentage=pct,
            )
            await self._publish(event, r["day"])

    # ---- operator action ---------------------------------------------------------------------------------------
    async def set_budget(self, req: SetBudget) -> BudgetState:
        scope = key_scope(req.key_id) if req.key_id else user_scope(req.user_id) if req.user_id else GLOBAL
        threshold = req.threshold
        if threshold is None:
            current = await store.get_budgets(self.pool, [scope])
            threshold = current[scope][1] if scope in current else self.settings.cost_budget_threshold
        await store.set_budget(self.pool, scope, usd_to_nusd(req.daily_limit_usd), threshold)
        (ev,) = await self.evaluate([scope])
        return ev.state()
