"""Configuration of the alerts service (environment variables with prefix ADP_)."""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from adp_common.settings import ServiceSettings


class AlertsSettings(ServiceSettings):
    service_name: str = "alerts"

    # Rules: the runbook's defaults, overridden by a YAML/JSON file and then by inline JSON.
    alerts_rules_file: str | None = Field(default=None, description="ADP_ALERTS_RULES_FILE: YAML or JSON rules")
    alerts_rules: str | None = Field(default=None, description="ADP_ALERTS_RULES: inline JSON rule overrides")
    alerts_expected_services: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="ADP_ALERTS_EXPECTED_SERVICES: services whose heartbeat must be present even if never seen "
        "(comma-separated or JSON list)",
    )

    # Evaluation
    alerts_eval_interval_s: float = Field(default=2.0, gt=0, description="how often the leader evaluates rules")
    alerts_replay_s: float = Field(
        default=3600.0, ge=0, description="on start, rebuild state from this much OPS/USAGE history"
    )
    alerts_replay_timeout_s: float = Field(default=15.0, gt=0)
    alerts_consume_usage: bool = Field(default=True, description="also read router usage records (USAGE stream)")

    # Leader lease (KV bucket `leases`)
    alerts_lease_ttl_s: float = Field(default=10.0, gt=0)
    alerts_lease_key: str = Field(default="alerts-leader", pattern=r"^[A-Za-z0-9_=.-]+$")

    # Notifications
    alerts_webhook_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="ADP_ALERTS_WEBHOOK_URLS: comma-separated or JSON list"
    )
    alerts_webhook_secret: SecretStr | None = Field(default=None, description="ADP_ALERTS_WEBHOOK_SECRET")
    alerts_webhook_timeout_s: float = Field(default=5.0, gt=0)
    alerts_webhook_events: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["firing", "resolved", "reminder", "acknowledged"],
        description="which alert events go to webhooks",
    )
    alerts_notify_attempts: int = Field(default=3, ge=1, description="tries per delivery round")
    alerts_notify_attempt_wait_s: float = Field(default=0.5, ge=0)
    alerts_notify_retry_s: float = Field(default=5.0, gt=0, description="outbox: first delay between rounds")
    alerts_notify_retry_max_s: float = Field(default=300.0, gt=0)
    alerts_notify_max_age_s: float = Field(default=86400.0, gt=0, description="give up after this long")
    alerts_notify_poll_s: float = Field(default=1.0, gt=0)

    @field_validator("alerts_webhook_urls", "alerts_expected_services", "alerts_webhook_events", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            s = v.strip()
            if s.startswith("["):
                return json.loads(s)
            return [p.strip() for p in s.split(",") if p.strip()]
        return v
