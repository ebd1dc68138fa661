"""Property-based run of schemathesis against the live gateway's /openapi.json (real services behind it):
no 5xx, and every 4xx carries the error envelope."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from adp_gateway.server import GatewayServer, running_gateway
from adp_testing.gateway import ADMIN_KEY, gateway_settings, platform_services

pytestmark = pytest.mark.slow

EXAMPLES = 6
SKIP_SUFFIXES = ("/events",)
# an endless stream, covered by the SSE tests; a key with a daily budget has it set in the cost service first
NOT_RUNNING = ("/api/alerts", "/api/costs", "/api/admin/budget", "/api/admin/users/{user_id}/keys")


@pytest_asyncio.fixture
async def stack(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str
) -> AsyncIterator[GatewayServer]:
    async with platform_services(nats_url, pg_dsn, prefix, databases, services=("llm-router", "dialogue")):
        settings = gateway_settings(nats_url, pg_dsn, prefix, databases.name("gateway"), redis_url)
        async with running_gateway(settings) as gw:
            yield gw


def run_schemathesis(schema_dict: dict[str, Any], base_url: str) -> list[str]:
    import schemathesis

    schema = schemathesis.openapi.from_dict(schema_dict)
    failures: list[str] = []
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    for result in schema.get_all_operations():
        _run_operation(result.ok(), base_url, auth, failures)
    return failures


def _run_operation(op: Any, base_url: str, auth: dict[str, str], failures: list[str]) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    if op.path.endswith(SKIP_SUFFIXES):
        return
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            headers = dict(case.headers or {})
            headers.setdefault("Authorization", auth["Authorization"])
            case.headers = headers
            resp = case.call(base_url=base_url, timeout=15)
            where = f"{case.method} {case.formatted_path} -> {resp.status_code}"
            if op.path in ("/api/health", "/health", "/ready"):
                return  # health bodies are the contract's health document, 503 when a component is down
            if resp.status_code >= 500:
                # cost and alerts do not run in this stack: 503 SERVICE_UNAVAILABLE is the right answer there
                allowed = op.path.startswith(NOT_RUNNING) and resp.status_code == 503
                if not allowed:
                    failures.append(f"{where}: {resp.text[:200]}")
                    return
            if resp.status_code >= 400:
                try:
                    body = resp.json()
                    ok = set(body) == {"error"} and {"code", "message"} <= set(body["error"])
                except ValueError:
                    ok = False
                if not ok:
                    failures.append(f"{where}: no error envelope: {resp.text[:200]}")

        try:
            check()
        except Unsatisfiable:
            continue  # e.g. no negative inputs exist for an operation without parameters


async def test_schemathesis_no_server_errors(stack: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as c:
        schema = (await c.get("/openapi.json")).json()
    failures = await asyncio.to_thread(run_schemathesis, schema, stack.url)
    assert not failures, "\n".join(failures[:20])
