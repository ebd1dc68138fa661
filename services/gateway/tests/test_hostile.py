"""Hostile clients against a real gateway: files that cost much to read, slow and trickled requests,
sessions that outlive their key, ids that overflow. Every case must end in a bounded time with the error
envelope, and leave the gateway answering everyone else."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from adp_gateway.server import GatewayServer, running_gateway
from adp_testing.gateway import (
    ADMIN_KEY,
    assert_envelope,
    gateway_settings,
    new_user,
    platform_services,
    read_sse,
    tiny_pdf,
)
from adp_testing.hostile import empty_text_operators_pdf


def settings(nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str, **kw: Any) -> Any:
    return gateway_settings(nats_url, pg_dsn, prefix, databases.name("gateway"), redis_url, **kw)


@pytest_asyncio.fixture
async def tight(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str
) -> AsyncIterator[GatewayServer]:
    """A gateway with small limits, so each hostile case trips them quickly."""
    # niceness 0: on a machine busy with other work a low-priority extraction would only measure the machine
    s = settings(
        nats_url, pg_dsn, prefix, databases, redis_url, pdf_cpu_s=1, pdf_page_cpu_s=0.3, pdf_wall_s=10, pdf_nice=0,
        header_timeout_s=1, body_timeout_s=1.5, max_connections_per_client=8, max_inflight=3,
        auth_failures_per_window=5,
    )  # fmt: skip
    async with running_gateway(s) as gw:
        yield gw


def admin_client(gw: GatewayServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gw.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)


async def test_hostile_pdfs_are_refused_quickly_and_others_stay_served(tight: GatewayServer) -> None:
    hostile = empty_text_operators_pdf(pages=6)
    async with admin_client(tight) as c:

        async def upload(data: bytes) -> httpx.Response:
            return await c.post("/api/files", files={"file": ("x.pdf", data, "application/pdf")})

        start = time.monotonic()
        uploads = asyncio.gather(*(upload(hostile) for _ in range(2)))
        await asyncio.sleep(0.3)
        probe_start = time.monotonic()
        r = await c.get("/health")
        probe_s = time.monotonic() - probe_start
        for r_up in await uploads:
            assert_envelope(r_up, 422, "FILE_UNREADABLE")
        assert time.monotonic() - start < 10
        assert r.status_code == 200 and probe_s < 1, probe_s
        ok = await upload(tiny_pdf("Quarterly numbers"))
        assert ok.status_code == 201 and ok.json()["textLength"] > 0, ok.text


async def test_pdf_over_its_total_cpu_budget_is_killed(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str
) -> None:
    # no page budget to speak of: only the process-wide CPU limit stops it
    s = settings(nats_url, pg_dsn, prefix, databases, redis_url, pdf_cpu_s=1, pdf_page_cpu_s=60, pdf_nice=0)
    async with running_gateway(s) as gw, admin_client(gw) as c:
        start = time.monotonic()
        files = {"file": ("x.pdf", empty_text_operators_pdf(pages=6), "application/pdf")}
        assert_envelope(await c.post("/api/files", files=files), 422, "FILE_UNREADABLE")
        assert time.monotonic() - start < 10


async def test_pdf_over_its_memory_limit_is_refused(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str
) -> None:
    # 18 KB whose one page parses into millions of operators: only the memory limit stops it in time
    s = settings(
        nats_url, pg_dsn, prefix, databases, redis_url, pdf_memory_mb=96, pdf_cpu_s=30, pdf_page_cpu_s=30, pdf_nice=0
    )
    async with running_gateway(s) as gw, admin_client(gw) as c:
        start = time.monotonic()
        files = {"file": ("x.pdf", empty_text_operators_pdf(pages=1, operators=2_000_000), "application/pdf")}
        body = assert_envelope(await c.post("/api/files", files=files), 422, "FILE_UNREADABLE")
        assert "memory" in body["error"]["message"] and time.monotonic() - start < 10


@pytest_asyncio.fixture
async def two_copies(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str
) -> AsyncIterator[tuple[GatewayServer, GatewayServer]]:
    """dialogue + llm-router, and two gateway copies sharing them (a revocation on one reaches the other)."""
    services = ("llm-router", "dialogue", "cost")
    async with platform_services(nats_url, pg_dsn, prefix, databases, services=services, tokens_per_s=20):
        s = settings(nats_url, pg_dsn, prefix, databases, redis_url, sse_heartbeat_s=1)
        async with running_gateway(s) as first, running_gateway(s) as second:
            yield first, second


async def open_socket(url: str, key: str) -> tuple[Any, asyncio.Event]:
    import socketio

    client = socketio.AsyncClient(reconnection=False)
    gone = asyncio.Event()
    client.on("disconnect", lambda *_: gone.set())
    await client.connect(url, auth={"token": key}, socketio_path="socket.io", wait_timeout=5)
    return client, gone


async def test_revoked_key_and_disabled_user_lose_live_sessions_on_every_copy(
    two_copies: tuple[GatewayServer, GatewayServer],
) -> None:
    first, second = two_copies
    async with admin_client(first) as admin:
        uid, key, key_id = await new_user(admin, "mallory")
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=second.url, headers=headers, timeout=30) as mallory:
            r = await mallory.post("/api/discussions", json={"topic": "A long talk", "maxRounds": 5})
            assert r.status_code == 201, r.text
            did = r.json()["id"]
            sock, sock_gone = await open_socket(second.url, key)
            ack = await sock.call("join-discussion", {"discussionId": did}, timeout=10)
            assert ack.get("ok"), ack
            model = (await mallory.get("/v1/models")).json()["data"][0]["id"]
            chat = {"model": model, "stream": True, "messages": [{"role": "user", "content": "Tell a long story"}]}
            completion_started = asyncio.Event()

            async def completion() -> float:
                async with mallory.stream("POST", "/v1/chat/completions", json=chat) as r:
                    assert r.status_code == 200
                    async for _ in r.aiter_lines():
                        completion_started.set()
                return time.monotonic()

            completion_ended = asyncio.create_task(completion())
            await asyncio.wait_for(completion_started.wait(), 10)
            async with mallory.stream("GET", f"/api/discussions/{did}/events") as stream:
                assert stream.status_code == 200
                events = read_sse(stream)
                await anext(events)
                revoked_at = time.monotonic()
                assert (await admin.delete(f"/api/admin/keys/{key_id}")).status_code == 200  # on the first copy

                async def until_closed() -> list[dict[str, Any]]:
                    return [ev async for ev in events]

                rest = await asyncio.wait_for(until_closed(), 3)
                assert time.monotonic() - revoked_at < 1.5
                assert rest[-1]["event"] == "error" and rest[-1]["data"]["code"] == "UNAUTHORIZED", rest[-3:]
            await asyncio.wait_for(sock_gone.wait(), 2)
            assert time.monotonic() - revoked_at < 1.5
            assert await asyncio.wait_for(completion_ended, 3) - revoked_at < 1.5  # the OpenAI stream ended too
            assert_envelope(await mallory.post(f"/api/discussions/{did}/proceed"), 401, "UNAUTHORIZED")

            # disabling the user ends the sessions of its other keys the same way
            r = await admin.post(f"/api/admin/users/{uid}/keys")
            second_key = r.json()["key"]
            sock, sock_gone = await open_socket(second.url, second_key)
            disabled_at = time.monotonic()
            assert (await admin.patch(f"/api/admin/users/{uid}", json={"disabled": True})).status_code == 200
            await asyncio.wait_for(sock_gone.wait(), 2)
            assert time.monotonic() - disabled_at < 1.5


async def raw(gw: GatewayServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", gw.port)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sent until it closed the connection (fails if it stays open longer)."""
    return await asyncio.wait_for(reader.read(), seconds)


async def test_slow_headers_trickled_bodies_and_connection_floods_are_cut(tight: GatewayServer) -> None:
    start = time.monotonic()
    reader, writer = await raw(tight)
    writer.write(b"GET /api/discussions HTTP/1.1\r\nHost: x\r\n")  # headers never finish
    assert await closed_within(reader, 3) == b""
    assert 0.8 < time.monotonic() - start < 3
    writer.close()

    # three unauthenticated POSTs trickle their bodies: with an in-flight limit of 3 everyone else still gets in
    async def trickle() -> bytes:
        reader, writer = await raw(tight)
        writer.write(b"POST /api/discussions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 100\r\n\r\n{")
        for _ in range(4):  # a byte every 0.25 s for 1 s, then nothing: the body deadline is 1.5 s
            await asyncio.sleep(0.25)
            writer.write(b" ")
        answer = await closed_within(reader, 5)
        writer.close()
        return answer

    trickles = asyncio.gather(*(trickle() for _ in range(3)))
    await asyncio.sleep(0.5)
    async with admin_client(tight) as admin:
        r = await admin.get("/api/admin/users")
        assert r.status_code == 200, r.text
        for answer in await trickles:
            assert answer.startswith(b"HTTP/1.1 408") and b"REQUEST_TIMEOUT" in answer, answer[:200]

        # connections per client address are capped: the ninth is closed as it opens
        held = [await raw(tight) for _ in range(8)]
        extra_reader, extra_writer = await raw(tight)
        assert await closed_within(extra_reader, 0.8) == b""
        for _, w in [*held, (extra_reader, extra_writer)]:
            w.close()
        await asyncio.sleep(0.1)
        assert (await admin.get("/api/admin/users")).status_code == 200


async def test_body_limits(tight: GatewayServer) -> None:
    async with admin_client(tight) as admin:
        # a form content type does not buy a JSON endpoint the upload limit
        form = {"file": ("t.txt", b"x" * (2 * 1024 * 1024), "text/plain")}
        assert_envelope(await admin.post("/api/discussions", files=form), 415, "UNSUPPORTED_MEDIA_TYPE")

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b" " * 100_000

        r = await admin.post("/api/discussions", content=chunks(), headers={"Content-Type": "application/json"})
        assert_envelope(r, 413, "PAYLOAD_TOO_LARGE")
        r = await admin.post("/api/files", files={"file": ("empty.txt", b"", "text/plain")})
        assert_envelope(r, 400, "VALIDATION_ERROR")


async def test_overflowing_ids_and_dates_are_bad_requests(
    two_copies: tuple[GatewayServer, GatewayServer], caplog: pytest.LogCaptureFixture
) -> None:
    gw, _ = two_copies
    too_big = str(2**63)
    async with admin_client(gw) as admin:
        r = await admin.post("/api/discussions", json={"topic": "Resume points", "maxRounds": 1})
        did = r.json()["id"]
        with caplog.at_level(logging.WARNING):
            r = await admin.get(f"/api/discussions/{did}/events", headers={"Last-Event-ID": too_big})
            assert_envelope(r, 400, "VALIDATION_ERROR")
            assert_envelope(await admin.get(f"/api/discussions/{did}/events?lastEventId={too_big}"), 400)
            for end in ("0001-01-05", "9999-12-31"):
                assert_envelope(await admin.get(f"/api/costs?endDate={end}"), 400, "VALIDATION_ERROR")
            assert_envelope(await admin.get("/api/costs?startDate=0001-01-01"), 400, "VALIDATION_ERROR")
            assert (await admin.get("/api/costs?endDate=2026-01-05")).status_code == 200
            assert_envelope(await admin.get("/api/costs?userId=usr%00x"), 400, "VALIDATION_ERROR")  # NUL: no SQL
            sock, _ = await open_socket(gw.url, ADMIN_KEY)
            try:
                ack = await sock.call("join-discussion", {"discussionId": did, "lastEventId": 2**63}, timeout=10)
                assert ack["error"]["code"] == "VALIDATION_ERROR", ack
                ack = await sock.call("join-discussion", {"discussionId": did, "lastEventId": 2**63 - 1}, timeout=10)
                assert ack.get("ok"), ack
            finally:
                await sock.disconnect()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [(r.name, r.getMessage()) for r in errors]


async def test_failed_authentications_are_limited_per_client_address(tight: GatewayServer) -> None:
    async with admin_client(tight) as admin:
        assert (await admin.get("/api/admin/users")).status_code == 200  # the admin's key is now cached
        async with httpx.AsyncClient(base_url=tight.url, timeout=10) as guesser:
            for i in range(5):
                r = await guesser.get("/api/discussions", headers={"Authorization": f"Bearer adp_guess_{i}"})
                assert_envelope(r, 401, "UNAUTHORIZED")
            # from now on a guess from this address is refused without a key lookup
            r = await guesser.get("/api/discussions", headers={"Authorization": "Bearer adp_guess_next"})
            assert_envelope(r, 429, "RATE_LIMIT_EXCEEDED")
            assert int(r.headers["retry-after"]) >= 1
        # a key in use keeps working from the same address
        assert (await admin.get("/api/admin/users")).status_code == 200


async def test_persona_names_with_control_or_bidi_characters_are_refused(tight: GatewayServer) -> None:
    async with admin_client(tight) as admin:
        for name in ("Ana\u202elyzer", "Critic\u2066", "Zero\u200bWidth", "Bell\x07", "Line\u2028Break"):
            body = {"topic": "Names that lie about themselves", "personas": [name, "Critic"]}
            assert_envelope(await admin.post("/api/discussions", json=body), 400, "VALIDATION_ERROR")


async def test_security_headers_and_api_docs_without_a_cdn(tight: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=tight.url, timeout=10) as c:
        for path in ("/", "/docs", "/redoc"):
            r = await c.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
            csp = r.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, (path, csp)
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"
            assert "cdn." not in r.text and "https://" not in r.text.split("<body")[0], path
        docs = (await c.get("/docs")).text
        for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
            assert asset in docs
            r = await c.get(asset)
            assert r.status_code == 200 and len(r.content) > 10_000, asset
        r = await c.get("/api/discussions")  # an error answer is data: nothing in it may render or be framed
        assert_envelope(r, 401)
        assert r.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert r.headers["x-content-type-options"] == "nosniff"
