"""cost service messages: budget state (KV), queries and budget changes."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from adp_common.schemas.money import Money, money_input


class BudgetState(BaseModel):
    """Value in the budget KV bucket: key 'global' or 'user.<id>'. Money as decimal strings in USD."""

    scope: str
    day: str
    spent_usd: Money
    limit_usd: Money
    percentage: float
    exceeded: bool
    threshold: float = 0.8


CostKind = Literal[
    "summary", "by_provider", "by_model", "by_user", "by_key", "by_discussion", "daily", "budget", "user"
]
"""What a cost query asks for: `summary` (by provider, per day, global budget), a breakdown (`by_*`: rows),
`daily`, `budget` (with a user id: that user's own budget and spend today; else the global one), `user`."""


# Report dates outside these have no costs and overflow the day arithmetic of a report (a day before or
# after the range, time zones): refused as a bad request.
REPORT_DATE_MIN = date(1970, 1, 1)
REPORT_DATE_MAX = date(9999, 12, 30)


class CostQuery(BaseModel):
    """Request on `<prefix>.cost.query`."""

    kind: CostKind = "summary"
    user_id: str | None = None
    start_date: date | None = Field(default=None, ge=REPORT_DATE_MIN, le=REPORT_DATE_MAX)
    end_date: date | None = Field(default=None, ge=REPORT_DATE_MIN, le=REPORT_DATE_MAX)
    limit: int | None = Field(
        default=None, ge=1, le=10_000, description="Max rows for the row kinds (default: the service's cap)"
    )


class CostRow(BaseModel):
    key: str
    cost_usd: Money
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0


class DailyCost(BaseModel):
    date: date
    provider: str
    cost_usd: Money
    requests: int = 0


class BudgetView(BaseModel):
    scope: str = Field(default="global", description="'global' or 'user:<id>'")
    current: Money
    limit: Money
    percentage: float
    exceeded: bool


class CostSummary(BaseModel):
    """Reply to a CostQuery; the fields the gateway needs for GET /api/costs (other kinds fill `rows`)."""

    costByProvider: list[CostRow] = Field(default_factory=list)
    dailyCosts: list[DailyCost] = Field(default_factory=list)
    budget: BudgetView | None = None
    userCost: Money | None = None
    rows: list[CostRow] = Field(default_factory=list)
    totalCost: Money = Decimal(0)


MAX_DAILY_LIMIT_USD = 1_000_000_000  # stored in nano-dollars as a 64-bit integer


class SetBudget(BaseModel):
    """Request on `<prefix>.cost.budget.set`; reply is the new BudgetState."""

    daily_limit_usd: Annotated[Decimal, money_input(MAX_DAILY_LIMIT_USD)] = Field(ge=0, le=MAX_DAILY_LIMIT_USD)
    user_id: str | None = None
    key_id: str | None = Field(default=None, description="an API key's own daily budget (instead of a user's)")
    threshold: float | None = Field(default=None, gt=0, le=1)
