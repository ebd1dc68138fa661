"""Configuration of the dialogue service (environment variables with prefix ADP_)."""

from __future__ import annotations

from adp_common.settings import ServiceSettings


class DialogueSettings(ServiceSettings):
    service_name: str = "dialogue"
