"""The gateway over real HTTP with real NATS/Postgres/Redis (other services absent or in-process)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from adp_common.bus import Bus
from adp_common.envelope import decode
from adp_common.schemas.dialogue import DialogueQuery, DiscussionList
from adp_common.schemas.ops import RequestStats
from adp_gateway.server import GatewayServer, running_gateway
from adp_testing.gateway import ADMIN_KEY, assert_envelope, gateway_settings, new_user, platform_services, tiny_pdf


async def test_auth_errors_envelope_and_request_id(gateway: GatewayServer, admin: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as anon:
        r = await anon.get("/api/discussions")
        assert_envelope(r, 401, "UNAUTHORIZED")
        r = await anon.get("/api/discussions", headers={"Authorization": "Bearer adp_wrong"})
        assert_envelope(r, 401, "UNAUTHORIZED")
        r = await anon.get("/api/discussions", headers={"Authorization": "Basic xyz"})
        assert_envelope(r, 401, "UNAUTHORIZED")
        r = await anon.get("/no/such/path", headers={"X-Request-Id": "req-123"})
        assert_envelope(r, 404, "NOT_FOUND")
        assert r.headers["x-request-id"] == "req-123"
        r = await anon.get("/health")
        assert r.status_code == 200 and r.json()["status"] == "UP"
        assert (await anon.get("/ready")).status_code == 200
        assert (await anon.get("/live")).json() == {"live": True}
        assert (await anon.get("/docs")).status_code == 200
        assert (await anon.get("/openapi.json")).json()["paths"]["/api/discussions"]
    r = await admin.post("/api/discussions", content=b"{not json", headers={"content-type": "application/json"})
    assert_envelope(r, 400, "VALIDATION_ERROR")
    r = await admin.post("/api/discussions", json={"topic": ""})
    assert_envelope(r, 400, "VALIDATION_ERROR")
    r = await admin.delete("/api/discussions")
    assert_envelope(r, 405, "METHOD_NOT_ALLOWED")
    assert r.headers["allow"] == "GET, POST"
    r = await admin.get("/v1/chat/completions")
    assert_envelope(r, 405, "METHOD_NOT_ALLOWED")
    assert r.headers["allow"] == "POST"
    r = await admin.post("/v1/embeddings", json={"model": "default", "input": "x"})
    assert_envelope(r, 404, "NOT_FOUND")
    r = await admin.post("/api/discussions", json={"topic": "x" * 100, "pad": "y" * (2 * 1024 * 1024)})
    assert_envelope(r, 413)


async def test_admin_users_keys_roles_and_revocation(gateway: GatewayServer, admin: httpx.AsyncClient) -> None:
    uid, key, key_id = await new_user(admin, "bob")
    async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}) as bob:
        for method, path, body in [
            ("POST", "/api/admin/users", {"name": "eve", "role": "admin"}),
            ("POST", f"/api/admin/users/{uid}/keys", None),
            ("DELETE", f"/api/admin/keys/{key_id}", None),
            ("PUT", "/api/admin/budget", {"daily_limit_usd": "5"}),
            ("POST", "/api/alerts/a1/ack", None),
        ]:
            assert_envelope(await bob.request(method, path, json=body), 403, "FORBIDDEN")
        # the key works until revoked, and stops at once on this copy
        assert (await bob.get("/api/costs")).status_code in (503, 200)
        r = await admin.delete(f"/api/admin/keys/{key_id}")
        assert r.status_code == 200 and r.json() == {"id": key_id, "revoked": True}
        assert_envelope(await bob.get("/api/discussions"), 401, "UNAUTHORIZED")
    assert_envelope(await admin.post("/api/admin/users/usr_nobody/keys"), 404, "NOT_FOUND")
    assert_envelope(await admin.delete("/api/admin/keys/key_nobody"), 404, "NOT_FOUND")
    r = await admin.post("/api/admin/users", json={"name": "x", "role": "root"})
    assert_envelope(r, 400, "VALIDATION_ERROR")


async def test_revocation_reaches_every_copys_key_cache(
    gateway: GatewayServer,
    admin: httpx.AsyncClient,
    nats_url: str,
    pg_dsn: str,
    prefix: str,
    databases: Any,
    redis_url: str,
) -> None:
    """Keys are cached per copy (a minute); revoking on one copy evicts the key on the others at once."""
    settings = gateway_settings(nats_url, pg_dsn, prefix, databases.name("gateway"), redis_url)
    assert settings.key_cache_ttl_s >= 30
    _, key, key_id = await new_user(admin, "carol")
    async with running_gateway(settings) as other:
        async with httpx.AsyncClient(base_url=other.url, headers={"Authorization": f"Bearer {key}"}) as carol:
            assert (await carol.get("/api/discussions")).status_code in (200, 503)  # now cached on `other`
            r = await admin.delete(f"/api/admin/keys/{key_id}")  # revoked through the first copy
            assert r.status_code == 200
            for _ in range(50):
                if (await carol.get("/api/discussions")).status_code == 401:
                    break
                await asyncio.sleep(0.02)
            assert_envelope(await carol.get("/api/discussions"), 401, "UNAUTHORIZED")


async def test_uploads_checked_by_content_and_size(gateway: GatewayServer, admin: httpx.AsyncClient) -> None:
    r = await admin.post("/api/files", files={"file": ("photo.png", b"MZ\x90\x00\x03\x00\x00\x00", "image/png")})
    assert_envelope(r, 415, "INVALID_FILE_TYPE")
    big = b"a" * (10 * 1024 * 1024 + 1)
    r = await admin.post("/api/files", files={"file": ("big.txt", big, "text/plain")})
    assert_envelope(r, 413, "INVALID_FILE_SIZE")
    r = await admin.post("/api/files", files={"file": ("report.pdf", tiny_pdf("Budget review"), "application/pdf")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["contentType"] == "application/pdf" and body["textLength"] > 0
    r = await admin.post("/api/files", files={"file": ("notes.bin", b"plain words", "application/octet-stream")})
    assert r.status_code == 201 and r.json()["contentType"] == "text/plain"
    r = await admin.post("/api/discussions", json={"topic": "A topic with a file", "files": ["file_unknown"]})
    assert_envelope(r, 404, "NOT_FOUND")
    r = await admin.post("/api/discussions", json={"topic": "A topic with a file", "files": ["file\x00x"]})
    assert_envelope(r, 400, "VALIDATION_ERROR")


async def test_missing_service_is_503_and_load_is_shed(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str, bus: Bus
) -> None:
    settings = gateway_settings(nats_url, pg_dsn, prefix, databases.name("gateway"), redis_url, max_inflight=1)
    async with running_gateway(settings) as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
            r = await c.post("/api/discussions", json={"topic": "Nobody is listening"})
            body = assert_envelope(r, 503, "SERVICE_UNAVAILABLE")
            assert "dialogue" in body["error"]["message"] and r.headers["retry-after"]
            # A slow stand-in for dialogue holds one request in flight; the next one is shed.
            release = asyncio.Event()
            entered = asyncio.Event()

            async def slow_query(q: DialogueQuery, _: object) -> DiscussionList:
                entered.set()
                await release.wait()
                return DiscussionList(discussions=[])

            await bus.serve(bus.catalog.dialogue_query, slow_query, DialogueQuery, name="query")
            first = asyncio.create_task(c.get("/api/discussions"))
            await asyncio.wait_for(entered.wait(), 5)
            r = await c.get("/api/discussions")
            assert_envelope(r, 503, "SERVICE_UNAVAILABLE")
            assert r.headers["retry-after"] == "1"
            assert (await c.get("/health")).status_code == 200  # health is never shed
            release.set()
            assert (await first).status_code == 200
            metrics = (await c.get("/metrics")).text
            assert "adp_gateway_shed_requests_total 1.0" in metrics
            assert 'adp_gateway_http_requests_total{method="GET",route="/api/discussions",status="200"}' in metrics


async def test_request_stats_published_and_access_log(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adp.gateway.access")
    settings = gateway_settings(
        nats_url, pg_dsn, prefix, databases.name("gateway"), redis_url, request_stats_interval_s=0.2
    )
    async with running_gateway(settings) as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
            uid, key, key_id = await new_user(c, "logged")
            async with httpx.AsyncClient(base_url=gw.url, headers={"Authorization": f"Bearer {key}"}) as u:
                await u.get("/api/discussions", headers={"X-Request-Id": "trace-me"})
        stats: list[RequestStats] = []
        for _ in range(50):
            msgs = await bus.stream_messages(bus.catalog.stream_name("OPS"), bus.catalog.ops("request-stats"))
            stats = [decode(m.data).payload for m in msgs]
            if sum(s.requests for s in stats) >= 3:
                break
            await asyncio.sleep(0.1)
        assert sum(s.requests for s in stats) >= 3
        assert sum(s.errors for s in stats) >= 1  # the 503 from the absent dialogue service
        assert all(s.service == "gateway" for s in stats)
    lines = [r for r in caplog.records if r.name == "adp.gateway.access"]
    mine = [r for r in lines if getattr(r, "request_id", None) == "trace-me"]
    assert len(mine) == 1
    rec = mine[0]
    assert (rec.method, rec.path, rec.status, rec.user_id, rec.key_id) == (
        "GET",
        "/api/discussions",
        503,
        uid,
        key_id,
    )
    assert rec.client_ip == "127.0.0.1" and rec.latency_ms >= 0
    assert all(key not in r.getMessage() and key not in str(r.__dict__) for r in lines)
    assert all(ADMIN_KEY not in str(r.__dict__) for r in lines)


@pytest.mark.slow
async def test_api_health_follows_a_required_service(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str
) -> None:
    settings = gateway_settings(
        nats_url, pg_dsn, prefix, databases.name("gateway"), redis_url, health_required="nats,database,llm-router"
    )
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.url) as c:
        r = await c.get("/api/health")
        assert r.status_code == 503 and r.json()["status"] == "DOWN"
        assert r.json()["components"]["llm-router"]["status"] == "DOWN"
        async with platform_services(nats_url, pg_dsn, prefix, databases, services=("llm-router",)):
            r = await c.get("/api/health")
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["status"] == "UP" and body["components"]["llm-router"]["status"] == "UP"
            assert body["components"]["dialogue"]["status"] == "DOWN"  # reported, not required here
            assert set(body) == {"status", "timestamp", "components"}
        r = await c.get("/api/health")
        assert r.status_code == 503 and r.json()["components"]["llm-router"]["status"] == "DOWN"
        async with platform_services(nats_url, pg_dsn, prefix, databases, services=("llm-router",)):
            assert (await c.get("/api/health")).status_code == 200


async def test_probes_are_the_shared_ones_and_not_ready_while_draining(gateway: GatewayServer) -> None:
    assert gateway.app.ctx is not None
    async with httpx.AsyncClient(base_url=gateway.url) as anon:
        r = await anon.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        gateway.app.ctx.draining.set()
        r = await anon.get("/ready")
        assert r.status_code == 503 and r.json() == {"ready": False}
        assert (await anon.get("/live")).json() == {"live": True}
