"""alerts service messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from adp_common.envelope import event_type

Severity = Literal["info", "warning", "critical"]
AlertState = Literal["firing", "resolved"]


@event_type("alert.changed")
class AlertEvent(BaseModel):
    """Published on `<prefix>.alerts.events.<state>` when an alert fires, resolves or is acknowledged."""

    id: str
    rule: str
    subject: str = Field(description="what the alert is about, e.g. a provider name or 'global'")
    severity: Severity
    state: AlertState
    acknowledged: bool = False
    message: str
    value: float | None = None
    threshold: float | None = None
    started_at: datetime
    resolved_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    labels: dict[str, Any] = Field(default_factory=dict)


class AlertQuery(BaseModel):
    kind: Literal["active", "history", "one"] = "active"
    alert_id: str | None = None
    rule: str | None = None
    severity: Severity | None = None
    state: AlertState | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class AlertList(BaseModel):
    alerts: list[AlertEvent]


class AckAlert(BaseModel):
    alert_id: str
    by: str | None = None
