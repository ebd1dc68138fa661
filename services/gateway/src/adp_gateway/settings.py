"""Configuration of the gateway service (environment variables with prefix ADP_)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from adp_common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    service_name: str = "gateway"
    # The gateway serves the client API, /health, /ready and /metrics on this one port.
    http_port: int = Field(default=8080, ge=0, le=65535, description="HTTP port of the client API (0 = free port)")
    http_reuse_port: bool = Field(
        default=False,
        description="share the port with other gateway copies on this host (SO_REUSEPORT): the kernel spreads "
        "connections over them and a dead copy's share moves to the others (`adp up --replicas N` sets it)",
    )

    # ---- auth ------------------------------------------------------------------------------------------
    bootstrap_api_key: SecretStr | None = Field(default=None, description="Ensures an admin user + this key at start")
    bootstrap_admin_name: str = "admin"
    allow_anonymous: bool = Field(default=False, description="Local development only: no key needed")
    key_cache_ttl_s: float = Field(
        default=60.0,
        ge=0,
        description="How long a key lookup is cached per copy (a revocation reaches every copy's cache at once "
        "over NATS; this bounds it only if that message is lost)",
    )

    # ---- protection ------------------------------------------------------------------------------------
    cors_origins: str = Field(default="", description="Comma-separated allowed origins; '*' for any; empty = none")
    max_inflight: int = Field(default=256, ge=1, description="In-flight requests above this are shed with 503")
    max_streams: int = Field(default=2000, ge=1, description="Concurrent SSE streams per copy")
    max_socket_connections: int = Field(default=2000, ge=1, description="Socket.IO connections per copy")
    max_socket_connections_per_user: int = Field(
        default=20, ge=1, description="Socket.IO connections of one user per copy"
    )
    header_timeout_s: float = Field(default=10.0, gt=0, description="Request line and headers must arrive within")
    body_timeout_s: float = Field(default=10.0, gt=0, description="A request body must arrive within (uploads too)")
    max_connections_per_client: int = Field(
        default=100, ge=1, description="Open HTTP connections per client address (raise it behind a proxy)"
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="Largest non-upload request body")
    max_file_bytes: int = Field(default=10 * 1024 * 1024, ge=1, description="Largest uploaded file")
    max_files_per_discussion: int = Field(default=5, ge=0, le=5)
    pdf_cpu_s: int = Field(default=5, ge=1, description="CPU seconds one PDF's text extraction may use in total")
    pdf_page_cpu_s: float = Field(default=1.0, gt=0, description="CPU seconds one PDF page may use")
    pdf_memory_mb: int = Field(default=512, ge=64, description="Address space of a PDF text extraction process")
    pdf_wall_s: float = Field(
        default=15.0, gt=0, description="Wall-clock budget of a PDF extraction (and of its wait for a slot)"
    )
    pdf_nice: int = Field(default=10, ge=0, le=19, description="Scheduling niceness of PDF extraction processes")
    pdf_concurrency: int = Field(default=2, ge=1, description="PDF extraction processes at once per copy")
    completion_timeout_s: float = Field(default=120.0, gt=0, le=600)

    # ---- rate limits (fixed window per key and per client IP; see docs/gateway.md) ---------------------
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout_s: float = Field(default=0.25, gt=0)
    rate_limit_enabled: bool = True
    rate_limit_per_ip: bool = True
    rate_limit_window_s: int = Field(default=60, ge=1)
    rate_limit_requests: int = Field(default=10, ge=1, description="All counted requests per window")
    rate_limit_start: int = Field(default=3, ge=1)
    rate_limit_proceed: int = Field(default=10, ge=1)
    rate_limit_answers: int = Field(default=10, ge=1)
    rate_limit_questions: int = Field(default=5, ge=1)
    rate_limit_summary: int = Field(default=2, ge=1)
    auth_failures_per_window: int = Field(
        default=20, ge=1, description="Failed authentications per client address per window, then 429"
    )
    trust_forwarded_for: bool = Field(default=False, description="Take the client IP from X-Forwarded-For")

    # ---- live streams ----------------------------------------------------------------------------------
    sse_heartbeat_s: float = Field(default=15.0, gt=0)
    sse_queue_size: int = Field(default=2000, ge=10, description="Events buffered per client before it is cut off")

    # ---- operations ------------------------------------------------------------------------------------
    request_stats_interval_s: float = Field(default=5.0, gt=0)
    health_timeout_s: float = Field(default=2.0, gt=0)
    health_required: str = Field(
        default="nats,database,dialogue,llm-router,cost",
        description="Components /api/health needs UP for 200 (others are reported but optional)",
    )

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def required_components(self) -> set[str]:
        return {c.strip() for c in self.health_required.split(",") if c.strip()}

    def action_limits(self) -> dict[str, int]:
        return {
            "all": self.rate_limit_requests,
            "start": self.rate_limit_start,
            "proceed": self.rate_limit_proceed,
            "answers": self.rate_limit_answers,
            "questions": self.rate_limit_questions,
            "summary": self.rate_limit_summary,
        }
