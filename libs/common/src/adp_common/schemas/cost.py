"""cost service messages: budget state (KV), queries and budget changes."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field


class BudgetState(BaseModel):
    """Value in the budget KV bucket: key 'global' or 'user.<id>'. Money as decimal strings in USD."""

    scope: str
    day: str
    spent_usd: Decimal
    limit_usd: Decimal
    percentage: float
    exceeded: bool
    threshold: float = 0.8


class CostQuery(BaseModel):
    """Request on `<prefix>.cost.query`."""

    kind: Literal["summary", "by_provider", "by_model", "by_user", "by_discussion", "daily", "budget", "user"] = (
        "summary"
    )
    user_id: str | None = None
    start_date: date | None = None
    end_date: date | None = None
    limit: int | None = Field(
        default=None, ge=1, le=10_000, description="Max rows for the row kinds (default: the service's cap)"
    )


class CostRow(BaseModel):
    key: str
    cost_usd: Decimal
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0


class DailyCost(BaseModel):
    date: date
    provider: str
    cost_usd: Decimal
    requests: int = 0


class BudgetView(BaseModel):
    current: Decimal
    limit: Decimal
    percentage: float
    exceeded: bool


class CostSummary(BaseModel):
    """Reply to a CostQuery; the fields the gateway needs for GET /api/costs (other kinds fill `rows`)."""

    costByProvider: list[CostRow] = Field(default_factory=list)
    dailyCosts: list[DailyCost] = Field(default_factory=list)
    budget: BudgetView | None = None
    userCost: Decimal | None = None
    rows: list[CostRow] = Field(default_factory=list)
    totalCost: Decimal = Decimal(0)


class SetBudget(BaseModel):
    """Request on `<prefix>.cost.budget.set`; reply is the new BudgetState."""

    daily_limit_usd: Decimal = Field(ge=0)
    user_id: str | None = None
    threshold: float | None = Field(default=None, gt=0, le=1)
