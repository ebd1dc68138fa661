"""Configuration of the alerts service (environment variables with prefix ADP_)."""

from __future__ import annotations

from adp_common.settings import ServiceSettings


class AlertsSettings(ServiceSettings):
    service_name: str = "alerts"
