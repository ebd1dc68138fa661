"""Operational facts on the OPS stream: what the alerts service and dashboards react to."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from adp_common.envelope import event_type, utcnow
from adp_common.schemas.llm import BreakerStateName


@event_type("ops.request-stats")
class RequestStats(BaseModel):
    """A window of request outcomes from one gateway copy (published every few seconds, not per request)."""

    service: str
    instance: str
    window_start: datetime
    window_s: float
    requests: int
    errors: int = Field(description="responses with status >= 500")
    client_errors: int = 0
    latencies_ms: list[float] = Field(
        default_factory=list, description="sample of request latencies (bounded; event streams and long-polls excluded)"
    )
    latency_p95_ms: float | None = None
    error_codes: dict[str, int] = Field(
        default_factory=dict, description="error responses (status >= 400) by platform error code"
    )


@event_type("ops.provider-health")
class ProviderHealthEvent(BaseModel):
    provider: str
    available: bool
    success_rate: float | None = None
    requests: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    time: datetime = Field(default_factory=utcnow)


@event_type("ops.breaker")
class BreakerChange(BaseModel):
    provider: str
    state: BreakerStateName
    previous: BreakerStateName
    time: datetime = Field(default_factory=utcnow)


@event_type("ops.budget")
class BudgetEvent(BaseModel):
    """Published once per budget per UTC day per kind."""

    scope: str = Field(description="'global' or 'user:<id>'")
    day: str = Field(description="UTC day, YYYY-MM-DD")
    kind: Literal["threshold", "exceeded", "cleared"]
    spent_usd: str
    limit_usd: str
    percentage: float


@event_type("ops.heartbeat")
class Heartbeat(BaseModel):
    service: str
    instance: str
    time: datetime = Field(default_factory=utcnow)
    rss_bytes: int = 0
    memory_pressure: float = Field(default=0.0, description="used / total memory of the host (0..1)")
    disk_free_ratio: float = Field(default=1.0, description="free / total of the data disk (0..1)")
