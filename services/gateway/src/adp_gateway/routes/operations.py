"""Operations: health and metrics of this copy and of the platform, costs, alerts and the dashboard."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from adp_common.errors import ErrorCode, PlatformError
from adp_common.health import Probes
from adp_common.schemas.alerts import AckAlert, AlertEvent, AlertList, AlertQuery
from adp_common.schemas.cost import CostQuery, CostSummary
from adp_common.schemas.dialogue import CountReply, DialogueQuery
from adp_common.schemas.llm import ProviderStatusList
from adp_gateway.context import GatewayContext
from adp_gateway.deps import ID_PATTERN, Admin, Ctx, User

router = APIRouter(tags=["operations"])

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
        probes.add_api_route(path, endpoint, summary=_PROBE_SUMMARIES.get(path), response_class=kind)
    probes.add_api_route("/api/health", api_health, summary="Platform health: 200 when every required component is UP")
    return probes


async def api_health(ctx: Ctx) -> JSONResponse:
    ok, body = await ctx.health()
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/api/costs", response_model=CostSummary)
async def costs(
    ctx: Ctx,
    p: User,
    userId: Annotated[str | None, Query(max_length=80)] = None,
    startDate: date | None = None,
    endDate: date | None = None,
) -> JSONResponse:
    if not p.is_admin:
        if userId is not None and userId != p.user_id:
            raise PlatformError(ErrorCode.FORBIDDEN, "non-admins can only see their own costs")
        userId = p.user_id
    if startDate and endDate and startDate > endDate:
        raise PlatformError(ErrorCode.VALIDATION_ERROR, "startDate is after endDate")
    q = CostQuery(kind="summary", user_id=userId, start_date=startDate, end_date=endDate)
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


@router.post("/api/alerts/{alert_id}/ack", response_model=AlertEvent)
async def ack(alert_id: str, ctx: Ctx, p: Admin) -> JSONResponse:
    if not ID_PATTERN.match(alert_id):
        raise PlatformError(ErrorCode.VALIDATION_ERROR, "invalid alert id")
    result = await ctx.request(ctx.bus.catalog.alerts_ack, AckAlert(alert_id=alert_id, by=p.user_id), AlertEvent)
    return JSONResponse(result.model_dump(mode="json"))


@router.get("/api/monitoring/dashboard")
async def dashboard(ctx: Ctx, p: User) -> JSONResponse:
    return JSONResponse(await _dashboard(ctx))


async def _dashboard(ctx: GatewayContext) -> dict[str, Any]:
    """Everything the dashboard shows, gathered concurrently; a part whose service is down is null + an error."""
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

    health, active, providers, alerts, costs = await asyncio.gather(
        part("health", ctx.health()),
        part("activeDiscussions", ctx.query(DialogueQuery(kind="active_count"), CountReply)),
        part("providers", ctx.request(cat.llm_providers, None, ProviderStatusList, timeout=t)),
        part("alerts", ctx.request(cat.alerts_query, AlertQuery(kind="active"), AlertList, timeout=t)),
        part("costs", ctx.request(cat.cost_query, CostQuery(kind="summary"), CostSummary, timeout=t)),
    )
    m = ctx.metrics
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
        for pr in (providers.providers if providers else [])
    ]
    return {
        "timestamp": datetime.now(UTC).isoformat(),
        "health": health[1] if health else None,
        "metrics": {
            "scope": "this gateway copy since start",
            "requests": m.total,
            "errors": m.total_errors,
            "errorRate": round(m.total_errors / m.total, 4) if m.total else 0.0,
            "activeDiscussions": active.count if active else None,
            "connections": {"sse": ctx.active_streams, "socketio": ctx.socket_connections},
        },
        "providers": provider_rows if providers else None,
        "circuitBreakers": [{"provider": pr.provider, "state": pr.breaker} for pr in providers.providers]
        if providers
        else None,
        "alerts": [a.model_dump(mode="json") for a in alerts.alerts] if alerts else None,
        "costs": costs.model_dump(mode="json") if costs else None,
        "errors": errors,
    }
