"""Gateway test fixtures: the gateway on a real port in the test's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from adp_gateway.server import GatewayServer, running_gateway
from adp_testing.gateway import ADMIN_KEY, gateway_settings


@pytest_asyncio.fixture
async def gateway(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str
) -> AsyncIterator[GatewayServer]:
    settings = gateway_settings(nats_url, pg_dsn, prefix, databases.name("gateway"), redis_url)
    async with running_gateway(settings) as gw:
        yield gw


@pytest_asyncio.fixture
async def admin(gateway: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=20
    ) as c:
        yield c
