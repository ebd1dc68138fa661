"""Configuration of the cost service (environment variables with prefix ADP_)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field

from adp_common.settings import ServiceSettings


class CostSettings(ServiceSettings):
    service_name: str = "cost"
    # Prices: defaults built in, then this file (JSON or TOML by extension), then ADP_COST_PRICES (JSON),
    # then ADP_COST_PRICE_<PROVIDER>=<input>,<output> (USD per 1M tokens). See docs/cost.md.
    cost_prices_file: str | None = Field(default=None, description="ADP_COST_PRICES_FILE")
    cost_prices: str | None = Field(default=None, description="ADP_COST_PRICES: JSON merged over the file")
    # Budgets (UTC day). Budgets set at run time (cost.budget.set) are stored and win over these defaults.
    cost_daily_budget_usd: Decimal = Field(default=Decimal("10.00"), ge=0)
    cost_user_daily_budget_usd: Decimal | None = Field(
        default=None, ge=0, description="Default per-user daily budget; none when unset"
    )
    cost_budget_threshold: float = Field(default=0.8, gt=0, le=1)
    cost_budget_refresh_s: float = Field(
        default=5.0, gt=0, description="Periodic recompute of budget state (day rollover, outbox)"
    )
    cost_budget_debounce_s: float = Field(default=0.05, ge=0, description="Coalesce budget updates after batches")
    # Ingest
    cost_ingest_batch: int = Field(default=3000, ge=1, le=10_000)
    cost_ingest_workers: int = Field(default=2, ge=1, le=16)
    cost_ack_wait_s: float = Field(default=30.0, gt=0, description="Redelivery delay of unacked usage records")
    cost_query_row_limit: int = Field(default=1000, ge=1, description="Max rows for by_user/by_discussion/...")
