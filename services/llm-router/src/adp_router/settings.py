"""Configuration of the llm-router service (environment variables with prefix ADP_).

Provider and route configuration (which providers exist, their keys, timeouts, models, and the ordered
fallback chain of each route) is described in docs/llm-router.md and parsed by `adp_router.config`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from adp_common.settings import ServiceSettings


class RouterSettings(ServiceSettings):
    service_name: str = "llm-router"
    # LLM calls are I/O bound and long: allow many in flight per copy (back-pressure beyond that).
    handler_concurrency: int = Field(default=1024, ge=1)

    # ---- providers and routes -------------------------------------------------------------------
    router_config_file: str | None = Field(
        default=None, description="JSON file with {'providers': {...}, 'routes': {...}} (merged before env JSON)"
    )
    router_providers: str = Field(default="", description="JSON object: provider name -> provider config")
    router_routes: str = Field(default="", description="JSON object: route name -> ['provider/model', ...]")
    router_simulated: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="auto: simulated serves every route only when no real provider has a key; "
        "always: only simulated; never: never use it",
    )

    # ---- simulated provider ---------------------------------------------------------------------
    simulated_ttft_ms: float = Field(default=150.0, ge=0)
    simulated_tokens_per_s: float = Field(default=60.0, gt=0)

    # ---- retries ---------------------------------------------------------------------------------
    router_max_attempts: int = Field(default=2, ge=1, le=10, description="attempts per chain entry")
    router_backoff_initial_s: float = Field(default=0.2, ge=0)
    router_backoff_max_s: float = Field(default=5.0, ge=0)
    router_retry_after_max_s: float = Field(default=30.0, ge=0, description="longest Retry-After honoured")

    # ---- circuit breaker -------------------------------------------------------------------------
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_window_s: float = Field(default=60.0, gt=0)
    breaker_cooldown_s: float = Field(default=30.0, ge=0)
    breaker_success_threshold: int = Field(default=2, ge=1)

    # ---- health, budget, HTTP ------------------------------------------------------------------------
    router_health_interval_s: float = Field(default=15.0, gt=0)
    router_health_window_s: float = Field(default=300.0, gt=0)
    router_budget_mode: Literal["reject", "free_only", "off"] = Field(
        default="reject", description="what to do when a budget is exceeded"
    )
    router_chunk_interval_ms: float = Field(
        default=5.0, ge=0, description="tokens arriving within this interval go to the caller in one chunk (0 = each)"
    )
    router_chunk_interval_max_ms: float = Field(
        default=500.0, ge=0, description="under load the chunk interval grows up to this (see router_busy_streams)"
    )
    router_chunk_tick_slots: int = Field(
        default=24,
        ge=1,
        description="streams are spread over this many flush ticks per chunk interval (at most one every 2.5 ms)",
    )
    router_busy_streams: int = Field(
        default=25,
        ge=1,
        description="streams in flight on one copy beyond which the chunk interval grows (with the square of the "
        "streams in flight)",
    )
    router_overload_lag_ms: float = Field(
        default=3.0,
        ge=0,
        description="when this copy's event loop lags more than this (moving average over ~2 s) the chunk interval "
        "grows in proportion, up to router_chunk_interval_overload_ms: fewer chunk messages when CPU runs short "
        "(0 = off)",
    )
    router_chunk_interval_overload_ms: float = Field(
        default=1000.0, ge=0, description="the longest chunk interval the event-loop lag can push it to"
    )
    router_keepalive_s: float = Field(
        default=2.0, gt=0, description="while a call runs, a keepalive goes to the caller this often"
    )
    router_caller_deadline_s: float = Field(
        default=6.0,
        gt=0,
        description="a streaming caller that has not answered a keepalive for this long is gone: its call is "
        "cancelled (one that is gone for certain, e.g. its process died, is cancelled at the next keepalive)",
    )
    router_result_ttl_s: float = Field(
        default=900.0,
        gt=0,
        description="how long a finished call's result is kept to be replayed to the same logical call "
        "(CompletionRequest.call_key) instead of calling the provider again",
    )
    router_max_connections: int = Field(default=512, ge=1)
    router_connect_timeout_s: float = Field(default=10.0, gt=0)
    router_default_max_tokens: int = Field(default=1024, ge=1, description="Anthropic needs max_tokens")
