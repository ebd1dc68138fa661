"""Configuration of the gateway service (environment variables with prefix ADP_)."""

from __future__ import annotations

from adp_common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    service_name: str = "gateway"
