"""Messages every service shares."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from adp_common.envelope import utcnow

Status = Literal["UP", "DOWN"]


class ComponentHealth(BaseModel):
    status: Status
    detail: str | None = None
    latency_ms: float | None = None


class HealthReply(BaseModel):
    """Reply to `<prefix>.<service>.health` and body of each service's HTTP `/health`."""

    service: str
    instance: str
    status: Status
    version: str = "0.1.0"
    timestamp: datetime = Field(default_factory=utcnow)
    components: dict[str, ComponentHealth] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)


class KeyRevoked(BaseModel):
    """An API key was revoked, or every key of a user stopped working (the user was disabled): gateway
    copies drop them from their key cache at once."""

    key_id: str = ""
    user_id: str | None = None


class SessionsEnded(BaseModel):
    """End the live sessions (SSE streams, Socket.IO connections) of a key, or of every key of a user, on
    every gateway copy (a key was revoked, a user disabled)."""

    user_id: str | None = None
    key_id: str | None = None


class Empty(BaseModel):
    pass
