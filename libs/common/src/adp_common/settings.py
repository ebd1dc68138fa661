"""Settings base: every service reads `ADP_*` variables through a subclass of `ServiceSettings`."""

from __future__ import annotations

import sys
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(SystemExit):
    """Raised (as SystemExit, so the process stops) when configuration is invalid."""


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ADP_", extra="ignore", env_file=None)

    service_name: str = "adp"
    instance_id: str = Field(default="", description="Unique per process; generated when empty")
    nats_url: str = Field(
        default="nats://127.0.0.1:4222", description="One NATS server, or a cluster's servers separated by commas"
    )
    subject_prefix: str = Field(default="adp", pattern=r"^[A-Za-z0-9_-]+$")
    # Server DSN without the database; each service connects to its own database on it.
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/postgres")
    database_name: str = Field(default="", description="Defaults to the service name (+ db_suffix)")
    db_suffix: str = Field(default="", pattern=r"^[A-Za-z0-9_]*$", description="Appended to default db names")
    db_pool_min: int = Field(default=1, ge=0)
    db_pool_max: int = Field(default=10, ge=1)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535, description="Admin HTTP port; 0 picks a free port")
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    log_dir: str | None = None
    log_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    slow_operation_ms: float = Field(
        default=2000.0, ge=0, description="log a slow-operation line for requests, bus calls and LLM calls this slow"
    )
    log_backups: int = Field(default=5, ge=0)
    request_timeout_s: float = Field(default=10.0, gt=0)
    handler_concurrency: int = Field(default=64, ge=1)
    shutdown_grace_s: float = Field(default=20.0, gt=0)
    stream_replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description="JetStream replicas of every stream and KV bucket (at most the NATS cluster's servers); "
        "an existing one with fewer is raised to it at start",
    )
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    loop_stall_warn_ms: float = Field(default=250.0, gt=0, description="Log event-loop stalls at least this long")
    gc_full_collection_every: int = Field(
        default=1000,
        ge=1,
        description="Generation-1 garbage collections between full ones (CPython's default is 10): a full "
        "collection scans every long-lived object and stalls the process meanwhile",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop", description="uvloop (faster; falls back to asyncio where unavailable) or asyncio"
    )


S = TypeVar("S", bound=BaseSettings)


def format_validation_error(cls: type[BaseSettings], err: ValidationError) -> str:
    prefix = cls.model_config.get("env_prefix", "")
    lines = [f"Invalid configuration for {cls.__name__}:"]
    for item in err.errors():
        field = ".".join(str(p) for p in item["loc"]) or "?"
        var = f"{prefix}{field}".upper()
        lines.append(f"  {var}: {item['msg']}")
    return "\n".join(lines)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment; on error stop with a message naming each bad variable."""
    try:
        return cls(**overrides)
    except ValidationError as err:
        message = format_validation_error(cls, err)
        print(message, file=sys.stderr)
        raise ConfigError(message) from None
