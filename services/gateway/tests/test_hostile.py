"""Hostile clients against a real gateway: files that cost much to read, slow and trickled requests,
sessions that outlive their key, ids that overflow. Every case must end in a bounded time with the error
envelope, and leave the gateway answering everyone else."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from adp_gateway.server import GatewayServer, running_gateway
from adp_testing.gateway import ADMIN_KEY, assert_envelope, gateway_settings, tiny_pdf
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
        nats_url, pg_dsn, prefix, databases, redis_url, pdf_cpu_s=1, pdf_page_cpu_s=0.3, pdf_wall_s=10, pdf_nice=0
    )
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
