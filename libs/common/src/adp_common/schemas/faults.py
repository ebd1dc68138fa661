"""Faults an operator injects into a simulated provider to rehearse failure procedures offline.

One `ProviderFault` per simulated provider name, kept in the KV bucket `faults` (written by the gateway's
`PUT /api/admin/faults/{provider}` and by `adp faults`, read by every router copy through a watch). The fake
provider of the test kit accepts the same model on its own admin endpoint. `decide` is the one place that
turns a fault and a random draw into what a call does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

FaultOutcome = Literal["ok", "outage", "error", "rate_limited", "stall"]


class ProviderFault(BaseModel):
    """What a simulated provider does to each call until cleared. Rates are shares of calls (0..1)."""

    outage: bool = Field(default=False, description="every call fails at once with 503 (full outage)")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="share of calls failing with 500")
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1, description="share of calls answered 429")
    retry_after_s: float = Field(default=1.0, ge=0, le=3600, description="Retry-After sent with each 429")
    latency_ms: float = Field(default=0.0, ge=0, le=600_000, description="added before the first token")
    stall_rate: float = Field(default=0.0, ge=0, le=1, description="share of calls that stall (no answer)")
    stall_s: float = Field(default=30.0, ge=0, le=3600, description="how long a stalled call hangs")

    @property
    def active(self) -> bool:
        return self != ProviderFault()


class ProviderFaultEntry(BaseModel):
    provider: str
    fault: ProviderFault


class ProviderFaultList(BaseModel):
    faults: list[ProviderFaultEntry] = Field(default_factory=list)


@dataclass(frozen=True)
class FaultDecision:
    outcome: FaultOutcome
    delay_s: float  # wait this long before answering (or before failing)


def decide(fault: ProviderFault | None, draw: float) -> FaultDecision:
    """What one call does under `fault`, for a uniform random `draw` in [0, 1). The rates stack in a fixed
    order (error, then 429, then stall), so their sum is the share of calls that fail."""
    if fault is None:
        return FaultDecision("ok", 0.0)
    delay = fault.latency_ms / 1000
    if fault.outage:
        return FaultDecision("outage", delay)
    edge = fault.error_rate
    if draw < edge:
        return FaultDecision("error", delay)
    edge += fault.rate_limit_rate
    if draw < edge:
        return FaultDecision("rate_limited", delay)
    edge += fault.stall_rate
    if draw < edge:
        return FaultDecision("stall", delay)
    return FaultDecision("ok", delay)
