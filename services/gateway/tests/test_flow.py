"""End-to-end over real HTTP: gateway + real llm-router (simulated provider) + dialogue (+ cost)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from adp_gateway.server import GatewayServer, running_gateway
from adp_gateway.testing import ADMIN_KEY, gateway_settings, new_user, platform_services, read_sse

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture
async def stack(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str
) -> AsyncIterator[GatewayServer]:
    async with platform_services(nats_url, pg_dsn, prefix, databases, services=("llm-router", "cost", "dialogue")):
        settings = gateway_settings(nats_url, pg_dsn, prefix, databases.name("gateway"), redis_url, sse_heartbeat_s=1)
        async with running_gateway(settings) as gw:
            yield gw


async def collect(
    client: httpx.AsyncClient,
    did: str,
    until: str,
    headers: dict[str, str] | None = None,
    limit: int = 10_000,
    timeout: float = 30,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    async def run() -> None:
        async with client.stream("GET", f"/api/discussions/{did}/events", headers=headers or {}) as r:
            assert r.status_code == 200, await r.aread()
            assert r.headers["content-type"].startswith("text/event-stream")
            async for ev in read_sse(r):
                if "event" not in ev or "data" not in ev:
                    continue
                out.append(ev)
                if ev["event"] == until or len(out) >= limit:
                    return

    await asyncio.wait_for(run(), timeout)
    return out


async def test_rest_and_sse_flow(stack: GatewayServer) -> None:
    async with httpx.AsyncClient(
        base_url=stack.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=20
    ) as admin:
        uid, key, _ = await new_user(admin, "alice")
    async with httpx.AsyncClient(base_url=stack.url, headers={"Authorization": f"Bearer {key}"}, timeout=20) as c:
        r = await c.post(
            "/api/discussions", json={"topic": "How should a small team adopt code review?", "max_rounds": 3}
        )
        assert r.status_code == 201, r.text
        d = r.json()
        did = d["id"]
        assert d["userId"] == uid
        events = await collect(c, did, "round-complete")
        names = [e["event"] for e in events]
        print(names)
        assert names[0] == "discussion-started"
        assert "message-start" in names and "message-complete" in names
        assert all(e["data"]["discussionId"] == did for e in events)
        ids = [e["id"] for e in events if "id" in e]
        assert ids == sorted(ids) and len(ids) == len(set(ids))
        r = await c.get(f"/api/discussions/{did}")
        assert r.status_code == 200 and r.json()["id"] == did
        r = await c.get("/api/discussions")
        assert [x["id"] for x in r.json()["discussions"]] == [did]
        r = await c.get(f"/api/discussions/{did}/export", params={"format": "markdown"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
        r = await c.get(f"/api/discussions/{did}/export", params={"format": "json"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        r = await c.post(f"/api/discussions/{did}/stop")
        assert r.status_code == 200, r.text
