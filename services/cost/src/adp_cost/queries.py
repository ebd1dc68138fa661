"""Answers to CostQuery (the data behind the gateway's GET /api/costs), read from the daily rollups."""

from __future__ import annotations

from datetime import date, timedelta

import asyncpg

from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.cost import BudgetView, CostQuery, CostRow, CostSummary, DailyCost
from adp_cost import store
from adp_cost.budget import GLOBAL, Evaluation
from adp_cost.pricing import nusd_to_usd

DEFAULT_RANGE_DAYS = 30
MAX_RANGE_DAYS = 3660
NONE_KEY = "(none)"

_ROW_KINDS = {
    "by_provider": "provider",
    "by_model": "model",
    "by_user": "user",
    "by_key": "key",
    "by_discussion": "discussion",
}


def date_range(q: CostQuery, today: date) -> tuple[date, date]:
    """[start, end] inclusive; defaults to the last 30 days ending today (UTC)."""
    end = q.end_date or today
    start = q.start_date or end - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if start > end:
        raise PlatformError(ErrorCode.VALIDATION_ERROR, "start_date must not be after end_date")
    if (end - start).days > MAX_RANGE_DAYS:
        raise PlatformError(ErrorCode.VALIDATION_ERROR, f"date range longer than {MAX_RANGE_DAYS} days")
    return start, end


def _row(a: store.Agg) -> CostRow:
    return CostRow(
        key=a.key or NONE_KEY,
        cost_usd=nusd_to_usd(a.cost_nusd),
        input_tokens=a.input_tokens,
        output_tokens=a.output_tokens,
        requests=a.requests,
    )


def budget_view(ev: Evaluation) -> BudgetView:
    s = ev.state()
    return BudgetView(
        scope=s.scope, current=s.spent_usd, limit=s.limit_usd, percentage=s.percentage, exceeded=s.exceeded
    )


async def answer(
    pool: asyncpg.Pool,
    q: CostQuery,
    *,
    today: date,
    global_budget: Evaluation,
    user_budget: Evaluation | None = None,
    row_limit: int,
) -> CostSummary:
    """`budget` with a user id: that user's own budget today (null when none applies) and their spend today."""
    start, end = date_range(q, today)
    limit = q.limit or row_limit
    out = CostSummary()
    if q.kind in _ROW_KINDS:
        aggs = await store.breakdown(pool, _ROW_KINDS[q.kind], start, end, q.user_id, limit)
        out.rows = [_row(a) for a in aggs]
        out.totalCost = sum((r.cost_usd for r in out.rows), nusd_to_usd(0))
        return out
    if q.kind in ("summary", "daily"):
        days = await store.daily(pool, start, end, q.user_id)
        out.dailyCosts = [
            DailyCost(date=r["day"], provider=r["provider"], cost_usd=nusd_to_usd(int(r["cost"])), requests=int(r["n"]))
            for r in days
        ]
        out.totalCost = nusd_to_usd(sum(int(r["cost"]) for r in days))
    if q.kind == "summary":
        out.costByProvider = [_row(a) for a in await store.breakdown(pool, "provider", start, end, q.user_id)]
        out.budget = budget_view(global_budget)
        if q.user_id is not None:
            out.userCost = nusd_to_usd(await store.user_total(pool, q.user_id, start, end))
    elif q.kind == "budget" and q.user_id is not None:
        out.budget = budget_view(user_budget) if user_budget is not None else None
        out.userCost = nusd_to_usd(await store.user_total(pool, q.user_id, today, today))
        out.totalCost = out.userCost
    elif q.kind == "budget":
        out.budget = budget_view(global_budget)
        out.totalCost = out.budget.current
    elif q.kind == "user":
        if not q.user_id:
            raise PlatformError(ErrorCode.VALIDATION_ERROR, "kind 'user' needs user_id")
        out.userCost = nusd_to_usd(await store.user_total(pool, q.user_id, start, end))
        out.totalCost = out.userCost
    return out


__all__ = ["GLOBAL", "answer", "budget_view", "date_range"]
