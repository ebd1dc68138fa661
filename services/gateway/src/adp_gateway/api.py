"""The client contract (docs/gateway.md) on FastAPI: the app, its error handlers and one router per
resource (adp_gateway.routes); the logic lives in the other modules."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from adp_gateway.context import GatewayContext
from adp_gateway.errors import ERROR_RESPONSES, ErrorDetail, ErrorEnvelope, error_body, install_handlers
from adp_gateway.routes import admin, discussions, faults, files, openai, operations

STATIC_DIR = Path(__file__).parent / "static"


def build_api(ctx: GatewayContext) -> FastAPI:
    s = ctx.settings
    app = FastAPI(
        title="AI Dialogue Platform gateway",
        version="0.1.0",
        description="Client API of the AI Dialogue Platform (see docs/gateway.md). "
        "Authenticate with `Authorization: Bearer <api key>`.",
        responses=ERROR_RESPONSES,
        # FastAPI's own OpenTelemetry: keep its HTTP request spans (the gateway's traces), but not its
        # per-dependency/serialization spans, metrics (Prometheus has ours) or logs (ours are JSON): they
        # cost CPU on every request and every SSE write.
        telemetry={"tracing": True, "operation_spans": False, "metrics": False, "logs": False},
    )
    app.state.ctx = ctx
    install_handlers(app)
    if s.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=s.cors_origin_list,
            allow_credentials="*" not in s.cors_origin_list,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-Id", "Retry-After"],
        )

    # Register the envelope schema so the error responses above resolve.
    @app.get("/api/_error-format", include_in_schema=False, response_model=ErrorEnvelope)
    async def _error_format() -> ErrorEnvelope:  # pragma: no cover - documentation only
        return ErrorEnvelope(error=ErrorDetail(code="NOT_FOUND", message="example"))

    for router in (
        operations.probes_router(ctx),
        discussions.router,
        files.router,
        openai.router,
        operations.router,
        admin.router,
        faults.router,
    ):
        app.include_router(router)
    if (STATIC_DIR / "index.html").exists():
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static")
    return app


__all__ = ["build_api", "error_body"]
