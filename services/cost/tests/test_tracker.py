"""Budgets: once-a-day threshold/exceeded events, KV state equal to the ledger, rollover at UTC midnight,
budgets set at run time over the bus."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from adp_common.bus import Bus, wait_for
from adp_common.catalog import KV_BUDGET
from adp_common.envelope import decode
from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.cost import BudgetState, CostQuery, CostSummary, SetBudget
from adp_common.schemas.ops import BudgetEvent
from adp_cost.pricing import nusd_to_usd

from .conftest import T0, CostEnv, make_record, run_cost


async def budget_events(bus: Bus) -> list[BudgetEvent]:
    msgs = await bus.stream_messages(bus.catalog.stream_name("OPS"), bus.catalog.ops("budget"))
    return [decode(m.data).payload for m in msgs]


async def kv_state(bus: Bus, key: str) -> BudgetState | None:
    kv = await bus.kv(KV_BUDGET)
    try:
        return BudgetState.model_validate_json((await kv.get(key)).value)
    except Exception:
        return None


async def today_spend(env: CostEnv, user: str | None = None) -> int:
    c = await env.conn()
    day = env.clock().date()
    if user is None:
        return int(await c.fetchval("SELECT coalesce(sum(cost_nusd),0) FROM usage_ledger WHERE day=$1", day))
    return int(
        await c.fetchval("SELECT coalesce(sum(cost_nusd),0) FROM usage_ledger WHERE day=$1 AND user_id=$2", day, user)
    )


async def wait_kv_matches(env: CostEnv, key: str, user: str | None = None) -> BudgetState:
    async def ok() -> bool:
        s = await kv_state(env.bus, key)
        return (
            s is not None
            and s.day == env.clock().date().isoformat()
            and s.spent_usd == nusd_to_usd(await today_spend(env, user))
        )

    assert await wait_for(ok, 10), (await kv_state(env.bus, key), await today_spend(env, user))
    state = await kv_state(env.bus, key)
    assert state is not None
    return state


async def test_threshold_and_exceeded_fire_once_each_per_day(cost_env: CostEnv) -> None:
    bus = cost_env.bus
    async with run_cost(cost_env) as app:
        g = await bus.request(
            bus.catalog.cost_budget_set, SetBudget(daily_limit_usd=Decimal("0.001")), response_model=BudgetState
        )
        assert g.limit_usd == Decimal("0.001") and g.spent_usd == 0 and not g.exceeded
        u = await bus.request(
            bus.catalog.cost_budget_set,
            SetBudget(daily_limit_usd=Decimal("0.0006"), user_id="u1", threshold=0.5),
            response_model=BudgetState,
        )
        assert u.scope == "user:u1" and u.threshold == 0.5
        # each record: 1000 tokens on Groq = 270,000 nUSD = 27% of the global budget, 45% of u1's
        for i in range(6):
            await cost_env.publish([make_record(input_tokens=500, output_tokens=500, user_id="u1")])
            await cost_env.wait_ledger(i + 1)
            state = await wait_kv_matches(cost_env, "global")
            assert state.percentage == pytest.approx(27.0 * (i + 1))
            assert state.exceeded == (i >= 3)
        user_state = await wait_kv_matches(cost_env, "user.u1", "u1")
        assert user_state.exceeded and user_state.limit_usd == Decimal("0.000600000")

        async def four() -> bool:
            return len(await budget_events(bus)) >= 4

        assert await wait_for(four, 10)
        await app.tracker.refresh_all()  # periodic recomputes do not fire again
    async with run_cost(cost_env) as again:  # neither does a restarted copy
        await again.tracker.refresh_all()
        await again.tracker.publish_outbox(older_than_s=0)
    events = await budget_events(bus)
    kinds = sorted((e.scope, e.kind) for e in events)
    assert kinds == [("global", "exceeded"), ("global", "threshold"), ("user:u1", "exceeded"), ("user:u1", "threshold")]
    by = {(e.scope, e.kind): e for e in events}
    assert by[("global", "threshold")].percentage == 81.0 and by[("global", "threshold")].day == "2025-03-10"
    assert by[("global", "exceeded")].percentage == 108.0
    assert by[("user:u1", "threshold")].percentage == 90.0  # crossed 50% with the 2nd record (90%)
    rows = await (await cost_env.conn()).fetch("SELECT published_at FROM budget_events")
    assert len(rows) == 4 and all(r["published_at"] is not None for r in rows)


async def test_kv_matches_ledger_and_rolls_over_at_midnight(cost_env: CostEnv) -> None:
    bus = cost_env.bus
    cost_env.clock.now = T0.replace(hour=23, minute=59)
    async with run_cost(cost_env, cost_user_daily_budget_usd=Decimal("0.01"), cost_budget_refresh_s=3600) as app:
        recs = [
            make_record(input_tokens=100 * i, output_tokens=7 * i, user_id=f"u{i % 3}", provider=p, model="m")
            for i, p in enumerate(["groq", "mistral", "openrouter", "openai", "anthropic", "simulated"] * 5)
        ]
        await cost_env.publish(recs)
        await cost_env.wait_ledger(len(recs))
        g = await wait_kv_matches(cost_env, "global")
        assert g.limit_usd == Decimal("10.000000000")
        for u in ("u0", "u1", "u2"):
            s = await wait_kv_matches(cost_env, f"user.{u}", u)
            assert s.limit_usd == Decimal("0.010000000") and s.spent_usd > 0
        summary = await bus.request(bus.catalog.cost_query, CostQuery(kind="budget"), response_model=CostSummary)
        assert summary.budget is not None and summary.budget.current == g.spent_usd
        # with a user id: that user's own budget and spend today, not the global budget
        own = await bus.request(
            bus.catalog.cost_query, CostQuery(kind="budget", user_id="u1"), response_model=CostSummary
        )
        assert own.budget is not None and own.budget.scope == "user:u1"
        u1 = await kv_state(bus, "user.u1")
        assert u1 is not None and own.budget.limit == Decimal("0.01")
        assert own.budget.current == u1.spent_usd == own.userCost
        idle = await bus.request(
            bus.catalog.cost_query, CostQuery(kind="budget", user_id="idle"), response_model=CostSummary
        )
        assert idle.budget is not None and idle.budget.current == 0 and idle.userCost == 0
        assert '"userCost":"0.000000000"' in idle.model_dump_json()

        cost_env.clock.advance(minutes=2)  # 00:01 UTC the next day
        await app.tracker.refresh_all()
        g2 = await kv_state(bus, "global")
        assert g2 is not None and g2.day == "2025-03-11" and g2.spent_usd == 0 and not g2.exceeded
        for u in ("u0", "u1", "u2"):
            s2 = await kv_state(bus, f"user.{u}")
            assert s2 is not None and s2.day == "2025-03-11" and s2.spent_usd == 0
        # a late record for yesterday does not count today; a record of today does
        await cost_env.publish([make_record(time=T0, user_id="u1"), make_record(time=cost_env.clock(), user_id="u1")])
        await cost_env.wait_ledger(len(recs) + 2)
        g3 = await wait_kv_matches(cost_env, "global")
        assert g3.spent_usd == nusd_to_usd(150 * 270)
        await wait_kv_matches(cost_env, "user.u1", "u1")


async def test_set_budget_validation_and_threshold_events_on_lowering(cost_env: CostEnv) -> None:
    bus = cost_env.bus
    async with run_cost(cost_env):
        await cost_env.publish([make_record(input_tokens=10_000, output_tokens=0)])  # 0.0027 USD
        await cost_env.wait_ledger(1)
        with pytest.raises(PlatformError) as err:
            await bus.request(bus.catalog.cost_budget_set, {"daily_limit_usd": "-1"})
        assert err.value.code == ErrorCode.VALIDATION_ERROR
        state = await bus.request(
            bus.catalog.cost_budget_set, SetBudget(daily_limit_usd=Decimal("0.003")), response_model=BudgetState
        )
        assert state.percentage == 90.0 and not state.exceeded
        assert (await wait_kv_matches(cost_env, "global")).limit_usd == Decimal("0.003000000")

        async def one() -> bool:
            return len(await budget_events(bus)) == 1

        assert await wait_for(one, 5)
        (ev,) = await budget_events(bus)
        assert (ev.scope, ev.kind, ev.spent_usd, ev.limit_usd) == ("global", "threshold", "0.002700000", "0.003000000")
        summary = await bus.request(
            bus.catalog.cost_query, CostQuery(end_date=T0.date() + timedelta(days=1)), response_model=CostSummary
        )
        assert summary.budget is not None and summary.budget.limit == Decimal("0.003000000")
