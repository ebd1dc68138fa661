"""Configuration of the llm-router service (environment variables with prefix ADP_)."""

from __future__ import annotations

from adp_common.settings import ServiceSettings


class RouterSettings(ServiceSettings):
    service_name: str = "llm-router"
