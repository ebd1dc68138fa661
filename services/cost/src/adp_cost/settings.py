"""Configuration of the cost service (environment variables with prefix ADP_)."""

from __future__ import annotations

from adp_common.settings import ServiceSettings


class CostSettings(ServiceSettings):
    service_name: str = "cost"
