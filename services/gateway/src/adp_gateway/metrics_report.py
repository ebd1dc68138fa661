"""The key figures an operator watches, in one typed document: `GET /api/metrics` returns it and the
dashboard (`GET /api/monitoring/dashboard`, the console's operator view) shows the same object, so both read
one source. Request figures: platform-wide from the request-stats windows every gateway copy publishes, and
this copy's own over the last `RECENT_WINDOW_S`; provider figures come from the llm-router, active discussions
from the dialogue service, today's spend from the cost service."""

from __future__ import annotations

import time
from collections import deque
from datetime import UTC, datetime
from decimal import Decimal

from pydantic import BaseModel, Field

from adp_common.schemas.cost import CostSummary
from adp_common.schemas.llm import ProviderStatusList
from adp_common.schemas.ops import RequestStats

RECENT_WINDOW_S = 60.0
RECENT_MAX = 50_000  # requests remembered (bounds memory under any load; the rate is then a lower bound)


class LatencyFigures(BaseModel):
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None


class GatewayFigures(BaseModel):
    scope: str = f"this gateway copy, last {RECENT_WINDOW_S:g} s"
    window_s: float
    requests: int
    request_rate_per_s: float
    errors: int = Field(description="responses with status >= 500")
    error_rate: float = Field(description="errors / requests")
    client_errors: int = Field(description="responses with status 400-499")
    error_codes: dict[str, int] = Field(description="error responses (>= 400) by platform error code")
    latency: LatencyFigures = Field(description="streams excluded")
    inflight: int
    sse_streams: int
    socketio_connections: int


class ProviderFigures(BaseModel):
    provider: str
    available: bool
    breaker: str
    success_rate: float | None
    requests: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    simulated: bool


class RouterFigures(BaseModel):
    providers: list[ProviderFigures]
    available: int
    total: int


class RequestFigures(BaseModel):
    """Every gateway copy's requests over the last RECENT_WINDOW_S (from the request-stats windows each copy
    publishes every ADP_REQUEST_STATS_INTERVAL_S; latency percentiles from their bounded samples)."""

    gateway_copies: int
    requests: int
    request_rate_per_s: float
    errors: int
    error_rate: float
    error_codes: dict[str, int]
    latency: LatencyFigures


class PlatformFigures(BaseModel):
    requests: RequestFigures
    active_discussions: int | None
    open_streams: int = Field(description="SSE streams and Socket.IO connections on this copy")
    cost_today_usd: Decimal | None
    budget_limit_usd: Decimal | None
    budget_percentage: float | None
    budget_exceeded: bool | None
    providers_available: int | None
    providers_total: int | None


class MetricsReport(BaseModel):
    timestamp: datetime
    platform: PlatformFigures
    gateway: GatewayFigures
    llm_router: RouterFigures | None
    errors: dict[str, str] = Field(default_factory=dict, description="parts whose service did not answer")


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return round(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))], 2)


class RecentRequests:
    """Outcomes of the requests of the last RECENT_WINDOW_S on this copy (time, status, latency, code)."""

    def __init__(self, window_s: float = RECENT_WINDOW_S, maxlen: int = RECENT_MAX) -> None:
        self.window_s = window_s
        self.items: deque[tuple[float, int, float | None, str | None]] = deque(maxlen=maxlen)
        self.started = time.monotonic()

    def add(self, status: int, latency_ms: float | None, code: str | None) -> None:
        self.items.append((time.monotonic(), status, latency_ms, code))

    def figures(self, *, inflight: int, sse: int, socketio: int) -> GatewayFigures:
        now = time.monotonic()
        while self.items and self.items[0][0] < now - self.window_s:
            self.items.popleft()
        window = min(self.window_s, max(now - self.started, 1e-3))
        latencies = sorted(lat for _, _, lat, _ in self.items if lat is not None)
        codes: dict[str, int] = {}
        errors = client_errors = 0
        for _, status, _, code in self.items:
            if status >= 500:
                errors += 1
            elif status >= 400:
                client_errors += 1
            if code is not None:
                codes[code] = codes.get(code, 0) + 1
        n = len(self.items)
        return GatewayFigures(
            window_s=round(window, 3),
            requests=n,
            request_rate_per_s=round(n / window, 3),
            errors=errors,
            error_rate=round(errors / n, 4) if n else 0.0,
            client_errors=client_errors,
            error_codes=dict(sorted(codes.items())),
            latency=LatencyFigures(
                p50_ms=percentile(latencies, 0.50),
                p95_ms=percentile(latencies, 0.95),
                p99_ms=percentile(latencies, 0.99),
            ),
            inflight=inflight,
            sse_streams=sse,
            socketio_connections=socketio,
        )


class PlatformRequests:
    """The request-stats windows every gateway copy published in the last RECENT_WINDOW_S."""

    def __init__(self, window_s: float = RECENT_WINDOW_S) -> None:
        self.window_s = window_s
        self.windows: deque[tuple[float, RequestStats]] = deque(maxlen=10_000)

    def add(self, stats: RequestStats) -> None:
        self.windows.append((time.monotonic(), stats))

    def figures(self) -> RequestFigures:
        now = time.monotonic()
        while self.windows and self.windows[0][0] < now - self.window_s:
            self.windows.popleft()
        windows = [w for _, w in self.windows]
        requests = sum(w.requests for w in windows)
        errors = sum(w.errors for w in windows)
        codes: dict[str, int] = {}
        for w in windows:
            for code, n in w.error_codes.items():
                codes[code] = codes.get(code, 0) + n
        latencies = sorted(x for w in windows for x in w.latencies_ms)
        span = min(self.window_s, sum(w.window_s for w in windows) / max(1, len({w.instance for w in windows})))
        return RequestFigures(
            gateway_copies=len({w.instance for w in windows}),
            requests=requests,
            request_rate_per_s=round(requests / span, 3) if span > 0 else 0.0,
            errors=errors,
            error_rate=round(errors / requests, 4) if requests else 0.0,
            error_codes=dict(sorted(codes.items())),
            latency=LatencyFigures(
                p50_ms=percentile(latencies, 0.50),
                p95_ms=percentile(latencies, 0.95),
                p99_ms=percentile(latencies, 0.99),
            ),
        )


def build_report(
    requests: RequestFigures,
    gateway: GatewayFigures,
    active_discussions: int | None,
    providers: ProviderStatusList | None,
    costs: CostSummary | None,
    errors: dict[str, str],
) -> MetricsReport:
    router = None
    if providers is not None:
        rows = [
            ProviderFigures(
                provider=p.provider,
                available=p.available,
                breaker=p.breaker,
                success_rate=p.success_rate,
                requests=p.requests,
                latency_p50_ms=p.latency_p50_ms,
                latency_p95_ms=p.latency_p95_ms,
                simulated=p.simulated,
            )
            for p in providers.providers
        ]
        router = RouterFigures(providers=rows, available=sum(r.available for r in rows), total=len(rows))
    budget = costs.budget if costs is not None else None
    return MetricsReport(
        timestamp=datetime.now(UTC),
        platform=PlatformFigures(
            requests=requests,
            active_discussions=active_discussions,
            open_streams=gateway.sse_streams + gateway.socketio_connections,
            cost_today_usd=budget.current if budget else None,
            budget_limit_usd=budget.limit if budget else None,
            budget_percentage=budget.percentage if budget else None,
            budget_exceeded=budget.exceeded if budget else None,
            providers_available=router.available if router else None,
            providers_total=router.total if router else None,
        ),
        gateway=gateway,
        llm_router=router,
        errors=errors,
    )
