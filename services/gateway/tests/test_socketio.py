"""Socket.IO specifics: a refused connection says why as a `{code, message}` object, and start-dialogue takes
the same options as POST /api/discussions (personas among them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from adp_gateway.server import GatewayServer, running_gateway
from adp_testing.gateway import ADMIN_KEY, gateway_settings, new_user, platform_services

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture
async def stack(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str
) -> AsyncIterator[GatewayServer]:
    async with platform_services(nats_url, pg_dsn, prefix, databases, services=("llm-router", "dialogue")):
        settings = gateway_settings(nats_url, pg_dsn, prefix, databases.name("gateway"), redis_url)
        async with running_gateway(settings) as gw:
            yield gw


async def test_refused_connection_is_a_code_and_message_object(stack: GatewayServer) -> None:
    import socketio

    for auth in ({"token": "adp_not_a_key"}, None):
        client = socketio.AsyncClient(reconnection=False)
        refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        client.on("connect_error", lambda data, f=refused: f.done() or f.set_result(data))
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(stack.url, auth=auth, socketio_path="socket.io", wait_timeout=5)
        data = await asyncio.wait_for(refused, 5)
        assert data["code"] == "UNAUTHORIZED" and data["message"] == "invalid or missing API key", data
        assert data["data"] == {"code": "UNAUTHORIZED", "message": "invalid or missing API key"}


async def test_start_dialogue_takes_personas_like_rest(stack: GatewayServer) -> None:
    import socketio

    async with httpx.AsyncClient(base_url=stack.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        _, key, _ = await new_user(admin, "socket-personas")
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(stack.url, auth={"token": key}, socketio_path="socket.io", wait_timeout=5)
    try:
        personas = ["Analyzer", {"name": "Critic", "role_prompt": "You look for what could go wrong."}]
        ack = await client.call(
            "start-dialogue",
            {"topic": "Personas chosen over the socket", "personas": personas, "maxRounds": 1},
            timeout=10,
        )
        assert ack.get("ok"), ack
        chosen = ack["discussion"]["personas"]
        assert [p["name"] for p in chosen] == ["Analyzer", "Critic"], chosen
        assert chosen[1]["role_prompt"] == "You look for what could go wrong."
        ack = await client.call("start-dialogue", {"topic": "Too many personas", "personas": ["P"] * 11}, timeout=10)
        assert ack["error"]["code"] == "VALIDATION_ERROR"
    finally:
        await client.disconnect()
