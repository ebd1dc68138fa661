"""GET /api/metrics and the dashboard: admin only, one source, error codes (not statuses) on the error
metric, latency percentiles, and a slow-operation line carrying the request's correlation id."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import httpx

from adp_common.logging import JsonFormatter, set_slow_threshold, slow_log
from adp_gateway.server import GatewayServer, running_gateway
from adp_testing.gateway import ADMIN_KEY, gateway_settings, new_user


async def test_key_metrics_are_admin_only_and_carry_error_codes(
    gateway: GatewayServer, admin: httpx.AsyncClient
) -> None:
    _, user_key, _ = await new_user(admin, "metrics-user")
    async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {user_key}"}) as user:
        for path in ("/api/metrics", "/api/monitoring/dashboard"):
            r = await user.get(path)
            assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN", path
    async with httpx.AsyncClient(base_url=gateway.url) as anon:
        for _ in range(3):
            assert (await anon.get("/api/discussions")).status_code == 401
        assert (await anon.get("/no/such/path")).status_code == 404
    prom = (await admin.get("/metrics")).text
    errors = [line for line in prom.splitlines() if line.startswith("adp_gateway_http_errors_total{")]
    assert any('code="UNAUTHORIZED"' in line for line in errors), errors
    assert any('code="NOT_FOUND"' in line for line in errors), errors
    assert not any('code="401"' in line or 'code="404"' in line for line in errors), errors

    report = (await admin.get("/api/metrics")).json()
    g = report["gateway"]
    assert g["error_codes"]["UNAUTHORIZED"] >= 3 and g["error_codes"]["NOT_FOUND"] >= 1
    assert g["requests"] >= 7 and g["request_rate_per_s"] > 0
    assert g["latency"]["p50_ms"] is not None and g["latency"]["p95_ms"] >= g["latency"]["p50_ms"]
    assert g["latency"]["p99_ms"] >= g["latency"]["p95_ms"]
    # only the gateway runs here: the other services' parts are null, with the reason
    assert report["llm_router"] is None and "providers" in report["errors"] and "costs" in report["errors"]
    assert set(report["platform"]) >= {"active_discussions", "open_streams", "cost_today_usd", "providers_available"}

    dash = (await admin.get("/api/monitoring/dashboard")).json()
    assert dash["metrics"]["latencyP95Ms"] is not None
    assert dash["metrics"]["errorCodes"]["UNAUTHORIZED"] >= 3
    assert dash["keyMetrics"]["gateway"]["latency"]["p95_ms"] == dash["metrics"]["latencyP95Ms"]


async def test_slow_requests_are_logged_with_their_correlation_id(
    gateway: GatewayServer, admin: httpx.AsyncClient
) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("gateway"))
    slow_log.addHandler(handler)
    set_slow_threshold(0.001)
    try:
        await admin.get("/api/health", headers={"X-Request-Id": "slow-req-1"})
    finally:
        set_slow_threshold(2000)
        slow_log.removeHandler(handler)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    line = next(x for x in lines if x.get("correlation_id") == "slow-req-1")
    assert line["event"] == "slow_operation" and line["kind"] == "request"
    assert line["operation"] == "GET /api/health" and line["duration_ms"] > 0
    assert line["message"].startswith("slow request GET /api/health took")


async def test_platform_request_figures_cover_every_gateway_copy(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str
) -> None:
    settings = gateway_settings(
        nats_url, pg_dsn, prefix, databases.name("gateway"), redis_url, request_stats_interval_s=0.2
    )
    async with running_gateway(settings) as first, running_gateway(settings) as second:
        async with httpx.AsyncClient(base_url=second.url) as anon:
            for _ in range(4):
                assert (await anon.get("/api/discussions")).status_code == 401  # only on the second copy
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(base_url=first.url, headers=headers) as admin:
            for _ in range(50):
                report = (await admin.get("/api/metrics")).json()
                platform = report["platform"]["requests"]
                if platform["gateway_copies"] == 2 and platform["error_codes"].get("UNAUTHORIZED", 0) >= 4:
                    break
                await asyncio.sleep(0.1)
            assert platform["gateway_copies"] == 2, platform
            assert platform["error_codes"]["UNAUTHORIZED"] >= 4 and platform["requests"] >= 4
            assert platform["latency"]["p95_ms"] is not None
            # this copy's own figures never saw the second copy's 401s
            assert "UNAUTHORIZED" not in report["gateway"]["error_codes"]
            dash = (await admin.get("/api/monitoring/dashboard")).json()
            assert dash["metrics"]["gatewayCopies"] == 2
