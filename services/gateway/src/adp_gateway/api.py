"""The client contract (docs/gateway.md) on FastAPI: the app, its error handlers and one router per
resource (adp_gateway.routes); the logic lives in the other modules."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount
from starlette.types import Receive, Scope, Send

from adp_gateway import openai_compat as oai
from adp_gateway.context import GatewayContext
from adp_gateway.errors import ERROR_RESPONSES, ErrorEnvelope, error_body, install_handlers
from adp_gateway.routes import admin, discussions, faults, files, openai, operations

STATIC_DIR = Path(__file__).parent / "static"
DOCS_ASSETS = Path(str(resources.files("fastapi_offline") / "static"))
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class ConsoleFiles(StaticFiles):
    """The web console's files, mounted at "/" after every API route. The mount matches every path, so an API
    path asked with a method it does not take lands here too: that is 405 with the route's own Allow header;
    any other method than GET or HEAD is 404 (no file takes it)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            allowed = api_methods(scope)
            if allowed:
                raise HTTPException(405, headers={"Allow": ", ".join(allowed)})
            if scope["method"] not in ("GET", "HEAD"):
                raise HTTPException(404)
        await super().__call__(scope, receive, send)


def api_methods(scope: Scope) -> list[str]:
    """The methods the app's API routes take at this request's path (empty: no API route has the path)."""
    routes = [r for r in scope["app"].router.routes if not isinstance(r, Mount)]
    near = [r for r in routes if r.matches(scope)[0] != Match.NONE]
    return [m for m in METHODS if any(r.matches({**scope, "method": m})[0] == Match.FULL for r in near)]


async def openai_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, oai.OpenAIError)
    return JSONResponse(exc.body(), status_code=exc.status)


def contract_document(doc: dict[str, Any]) -> None:
    """The OpenAPI document as the server answers: the error envelope defined, and no 422 (request validation
    errors are 400 VALIDATION_ERROR in the envelope)."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    envelope = ErrorEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(envelope.pop("$defs", {}))
    schemas["ErrorEnvelope"] = envelope
    for path_item in doc.get("paths", {}).values():
        for operation in path_item.values():
            operation.get("responses", {}).pop("422", None)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)


def build_api(ctx: GatewayContext) -> FastAPI:
    s = ctx.settings
    app = FastAPI(
        docs_url=None,  # served below from packaged assets, not a CDN
        redoc_url=None,
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
    app.add_exception_handler(oai.OpenAIError, openai_error)
    if s.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=s.cors_origin_list,
            allow_credentials="*" not in s.cors_origin_list,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-Id", "Retry-After"],
        )

    _api_docs(app)
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
    document = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            contract_document(document())
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to replace the schema
    if (STATIC_DIR / "index.html").exists():
        app.mount("/", ConsoleFiles(directory=STATIC_DIR, html=True), name="static")
    return app


def _api_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, their scripts and styles from the fastapi-offline package
    (the docs work offline and load nothing from another site)."""
    app.mount("/docs-assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API docs",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API reference",
            redoc_js_url="/docs-assets/redoc.standalone.js",
            redoc_favicon_url="/docs-assets/favicon.png",
            with_google_fonts=False,
        )


__all__ = ["build_api", "error_body"]
