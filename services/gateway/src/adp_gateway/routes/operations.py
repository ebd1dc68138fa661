"""Operations: health and metrics of this copy and of the platform, costs, alerts and the dashboard."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from adp_common.errors import ErrorCode, PlatformError
from adp_common.health import Probes
from adp_common.schemas.alerts import AckAlert, AlertEvent, AlertList, AlertQuery
from adp_common.schemas.cost import REPORT_DATE_MAX, REPORT_DATE_MIN, CostKind, CostQuery, CostSummary
from adp_common.schemas.dialogue import CountReply, DialogueQuery
from adp_common.schemas.llm import ProviderStatusList
from adp_gateway.context import GatewayContext
from adp_gateway.deps import ID_PATTERN, Admin, Ctx, ResourceId, User
from adp_gateway.errors import error_responses
from adp_gateway.metrics_report import MetricsReport, build_report

router = APIRouter(tags=["operations"])

# A probe's 503 carries its own document (which component is down), not the error envelope.
_NOT_UP: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "Not up (or not ready): the same document, saying what is down",
        "content": {"application/json": {}},
    }
}
_PROBE_SUMMARIES = {
    "/health": "This gateway copy's own health (runtime checks)",
    "/live": "Liveness: the process answers HTTP",
}


def probes_router(ctx: GatewayContext) -> APIRouter:
    """The probes every service serves (adp_common.health), here on the API port; not ready while draining,
    and /api/health for the whole platform."""
    probes = APIRouter(tags=["operations"])
    shared = Probes(ctx.rt.checks, ctx.rt.metrics, ready=lambda: not ctx.draining.is_set())
    for path, endpoint in shared.endpoints():
        kind = Response if path == "/metrics" else JSONResponse
        probes.add_api_route(path, endpoint, summary=_PROBE_SUMMARIES.get(path), response_class=kind, responses=_NOT_UP)
    probes.add_api_route(
        "/api/health",
        api_health,
        summary="Platform health: 200 when every required component is UP",
        responses=_NOT_UP,
    )
    return probes


async def api_health(ctx: Ctx) -> JSONResponse:
    ok, body = await ctx.health()
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/api/costs", response_model=CostSummary, responses=error_responses(403))
async def costs(
    ctx: Ctx,
    p: User,
    kind: Annotated[CostKind, Query(description="summary; a breakdown into rows (by_*); daily; budget")] = "summary",
    userId: Annotated[str | None, Query(pattern=ID_PATTERN.pattern)] = None,
    startDate: Annotated[date | None, Query(ge=REPORT_DATE_MIN, le=REPORT_DATE_MAX)] = None,
    endDate: Annotated[date | None, Query(ge=REPORT_DATE_MIN, le=REPORT_DATE_MAX)] = None,
) -> JSONResponse:
    """A user sees only their own costs (and, with kind=budget, their own budget); an admin sees everyone's,
    or one user's with userId."""
    if not p.is_admin:
        if userId is not None and userId != p.user_id:
            raise PlatformError(ErrorCode.FORBIDDEN, "non-admins can only see their own costs")
        userId = p.user_id
    if startDate and endDate and startDate > endDate:
        raise PlatformError(ErrorCode.VALIDATION_ERROR, "startDate is after endDate")
    q = CostQuery(kind=kind, user_id=userId, start_date=startDate, end_date=endDate)
    result = await ctx.request(ctx.bus.catalog.cost_query, q, CostSummary)
    return JSONResponse(result.model_dump(mode="json"))


@router.get("/api/alerts", response_model=AlertList)
async def alerts(
    ctx: Ctx,
    p: User,
    kind: Literal["active", "history"] = "history",
    severity: Literal["info", "warning", "critical"] | None = None,
    state: Literal["firing", "resolved"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    q = AlertQuery(kind=kind, severity=severity, state=state, limit=limit)
    result = await ctx.request(ctx.bus.catalog.alerts_query, q, AlertList)
    return JSONResponse(result.model_dump(mode="json"))


@router.post("/api/alerts/{alert_id}/ack", response_model=AlertEvent, responses=error_responses(403, 404))
async def ack(alert_id: ResourceId, ctx: Ctx, p: Admin) -> JSONResponse:
    if not ID_PATTERN.match(alert_id):
        raise PlatformError(ErrorCode.VALIDATION_ERROR, "invalid alert id")
    result = await ctx.request(ctx.bus.catalog.alerts_ack, AckAlert(alert_id=alert_id, by=p.user_id), AlertEvent)
    return JSONResponse(result.model_dump(mode="json"))


@router.get("/api/metrics", response_model=MetricsReport, summary="Key metrics of the platform (admin)")
async def key_metrics(ctx: Ctx, p: Admin) -> JSONResponse:
    report, _ = await _gather(ctx, alerts=False)
    return JSONResponse(report.model_dump(mode="json"))


@router.get("/api/monitoring/dashboard", summary="Everything the operator view shows (admin)")
async def dashboard(ctx: Ctx, p: Admin) -> JSONResponse:
    return JSONResponse(await _dashboard(ctx))


async def _gather(ctx: GatewayContext, *, alerts: bool) -> tuple[MetricsReport, dict[str, Any]]:
    """Ask every service at once; a part whose service is down is null, with its error in `errors`."""
    cat = ctx.bus.catalog
    t = ctx.settings.health_timeout_s + 1
    errors: dict[str, str] = {}

    async def part(name: str, coro: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(coro, t)
        except PlatformError as err:
            errors[name] = f"{err.code.value}: {err.message}"[:200]
        except Exception as err:
            errors[name] = (str(err) or type(err).__name__)[:200]
        return None

    async def nothing() -> None:
        return None

    health, active, providers, alert_list, costs = await asyncio.gather(
        part("health", ctx.health()) if alerts else nothing(),
        part("activeDiscussions", ctx.query(DialogueQuery(kind="active_count"), CountReply)),
        part("providers", ctx.request(cat.llm_providers, None, ProviderStatusList, timeout=t)),
        part("alerts", ctx.request(cat.alerts_query, AlertQuery(kind="active"), AlertList, timeout=t))
        if alerts
        else nothing(),
        part("costs", ctx.request(cat.cost_query, CostQuery(kind="summary"), CostSummary, timeout=t)),
    )
    m = ctx.metrics
    gateway = m.recent.figures(inflight=m.inflight_now, sse=ctx.active_streams, socketio=ctx.socket_connections)
    report = build_report(
        ctx.platform_requests.figures(), gateway, active.count if active else None, providers, costs, errors
    )
    return report, {"health": health, "providers": providers, "alerts": alert_list, "costs": costs}


async def _dashboard(ctx: GatewayContext) -> dict[str, Any]:
    """Everything the dashboard shows: the key metrics of GET /api/metrics plus health, breakers and alerts."""
    report, parts = await _gather(ctx, alerts=True)
    health, providers, alerts, costs = parts["health"], parts["providers"], parts["alerts"], parts["costs"]
    g, pf = report.gateway, report.platform
    provider_rows = [
        {
            "provider": pr.provider,
            "available": pr.available,
            "successRate": pr.success_rate,
            "requests": pr.requests,
            "latencyP50Ms": pr.latency_p50_ms,
            "latencyP95Ms": pr.latency_p95_ms,
            "simulated": pr.simulated,
        }
        for pr in (report.llm_router.providers if report.llm_router else [])
    ]
    return {
        "timestamp": report.timestamp.isoformat(),
        "health": health[1] if health else None,
        "metrics": {
            "scope": g.scope,
            "requests": g.requests,
            "requestRatePerS": g.request_rate_per_s,
            "errors": g.errors,
            "errorRate": g.error_rate,
            "errorCodes": g.error_codes,
            "latencyP50Ms": g.latency.p50_ms,
            "latencyP95Ms": g.latency.p95_ms,
            "latencyP99Ms": g.latency.p99_ms,
            "activeDiscussions": pf.active_discussions,
            "connections": {"sse": g.sse_streams, "socketio": g.socketio_connections},
            "costTodayUsd": str(pf.cost_today_usd) if pf.cost_today_usd is not None else None,
            "platformRequestRatePerS": pf.requests.request_rate_per_s,
            "platformErrorRate": pf.requests.error_rate,
            "platformLatencyP95Ms": pf.requests.latency.p95_ms,
            "gatewayCopies": pf.requests.gateway_copies,
        },
        "keyMetrics": report.model_dump(mode="json"),
        "providers": provider_rows if providers else None,
        "circuitBreakers": [{"provider": pr.provider, "state": pr.breaker} for pr in providers.providers]
        if providers
        else None,
        "alerts": [a.model_dump(mode="json") for a in alerts.alerts] if alerts else None,
        "costs": costs.model_dump(mode="json") if costs else None,
        "errors": report.errors,
    }
