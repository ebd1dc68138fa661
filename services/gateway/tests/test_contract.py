"""The client contract's single sources: limits the gateway, OpenAPI, the console and dialogue all share."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from adp_common.schemas.dialogue import INPUT_MAX_CHARS, MAX_PERSONAS, TOPIC_MAX_CHARS, TOPIC_MIN_CHARS
from adp_gateway.server import GatewayServer, running_gateway
from adp_testing.gateway import ADMIN_KEY, assert_envelope, gateway_settings, platform_services, read_sse

STATIC = Path(__file__).parents[1] / "src" / "adp_gateway" / "static"


async def test_limits_are_checked_at_the_gateway_and_shown_in_openapi(
    gateway: GatewayServer, admin: httpx.AsyncClient
) -> None:
    schemas = (await admin.get("/openapi.json")).json()["components"]["schemas"]
    create = schemas["CreateDiscussion"]["properties"]
    assert (create["topic"]["minLength"], create["topic"]["maxLength"]) == (TOPIC_MIN_CHARS, TOPIC_MAX_CHARS)
    assert create["personas"]["anyOf"][0]["maxItems"] == MAX_PERSONAS
    assert schemas["InputBody"]["properties"]["input"]["maxLength"] == INPUT_MAX_CHARS
    # Refused here with the validation envelope (no dialogue service runs: a request let through would be 503).
    for body in [
        {"topic": "x" * (TOPIC_MAX_CHARS + 1)},
        {"topic": "x" * (TOPIC_MIN_CHARS - 1)},
        {"topic": "A fine topic to discuss", "personas": [f"P{i}" for i in range(MAX_PERSONAS + 1)]},
    ]:
        assert_envelope(await admin.post("/api/discussions", json=body), 400, "VALIDATION_ERROR")


def test_the_console_form_has_the_same_topic_limits() -> None:
    html = (STATIC / "index.html").read_text()
    topic = re.search(r'<textarea id="topic"[^>]*>', html)
    assert topic is not None
    assert f'maxlength="{TOPIC_MAX_CHARS}"' in topic.group(0) and f'minlength="{TOPIC_MIN_CHARS}"' in topic.group(0)


@pytest_asyncio.fixture
async def stack(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str
) -> AsyncIterator[GatewayServer]:
    async with platform_services(nats_url, pg_dsn, prefix, databases, services=("llm-router", "dialogue")):
        settings = gateway_settings(nats_url, pg_dsn, prefix, databases.name("gateway"), redis_url, sse_heartbeat_s=1)
        async with running_gateway(settings) as gw:
            yield gw


async def whole_stream(client: httpx.AsyncClient, did: str, timeout: float = 40) -> list[dict[str, Any]]:
    """Every event of the discussion's SSE stream until the server closes it (a timeout if it never does)."""

    async def run() -> list[dict[str, Any]]:
        async with client.stream("GET", f"/api/discussions/{did}/events") as r:
            assert r.status_code == 200, await r.aread()
            return [ev async for ev in read_sse(r) if "event" in ev and "data" in ev]

    return await asyncio.wait_for(run(), timeout)


@pytest.mark.slow
async def test_an_ended_discussion_announces_its_end_once_and_its_stream_closes(stack: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=stack.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=20) as c:
        r = await c.post("/api/discussions", json={"topic": "Tabs or spaces for a new codebase?", "maxRounds": 1})
        assert r.status_code == 201, r.text
        did = r.json()["id"]
        live = await whole_stream(c, did)  # closes by itself once round 1 (the last) is done
        names = [e["event"] for e in live]
        assert names[-1] in ("discussion-completed", "discussion-resolved") and names.count(names[-1]) == 1
        assert (await c.get(f"/api/discussions/{did}")).json()["status"] == names[-1].removeprefix("discussion-")
        late = await whole_stream(c, did)  # after the end: the replay, the terminal event, the close
        durable = [e for e in live if "id" in e]
        assert [(e["id"], e["event"]) for e in late] == [(e["id"], e["event"]) for e in durable]


@pytest.mark.slow
async def test_stop_over_socketio_ends_the_socket_and_sse_streams(stack: GatewayServer) -> None:
    import socketio

    async with httpx.AsyncClient(base_url=stack.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=20) as c:
        sio = socketio.AsyncClient(reconnection=False)
        received: list[tuple[str, dict[str, Any]]] = []
        stopped = asyncio.Event()

        async def on_any(event: str, data: dict[str, Any]) -> None:
            received.append((event, data))
            if event == "discussion-stopped":
                stopped.set()

        sio.on("*", on_any)
        await sio.connect(stack.url, auth={"token": ADMIN_KEY}, socketio_path="socket.io", wait_timeout=5)
        try:
            ack = await sio.call("start-dialogue", {"topic": "A topic to stop half way", "maxRounds": 5}, timeout=10)
            did = ack["discussion"]["id"]
            sse = asyncio.create_task(whole_stream(c, did))
            await asyncio.sleep(0.3)
            ack = await sio.call("stop-dialogue", {"discussionId": did}, timeout=10)
            assert ack.get("ok") and ack["discussion"]["status"] == "stopped", ack
            await asyncio.wait_for(stopped.wait(), 10)
            events = await sse
            # a socket joining after the end gets the replay, ending with the terminal event
            late = socketio.AsyncClient(reconnection=False)
            replayed: list[str] = []
            ended = asyncio.Event()

            async def on_late(event: str, data: dict[str, Any]) -> None:
                replayed.append(event)
                if event == "discussion-stopped":
                    ended.set()

            late.on("*", on_late)
            await late.connect(stack.url, auth={"token": ADMIN_KEY}, socketio_path="socket.io", wait_timeout=5)
            try:
                assert (await late.call("join-discussion", {"discussionId": did}, timeout=10)).get("ok")
                await asyncio.wait_for(ended.wait(), 10)
            finally:
                await late.disconnect()
        finally:
            await sio.disconnect()
    assert replayed[0] == "discussion-started" and replayed[-1] == "discussion-stopped"
    assert [e for e, _ in received].count("discussion-stopped") == 1
    assert events[-1]["event"] == "discussion-stopped" and events[-1]["data"]["discussionId"] == did


@pytest.mark.slow
async def test_default_personas_named_alone_keep_their_prompt_and_route(stack: GatewayServer) -> None:
    """What the console sends when a default persona is unticked: names only."""
    async with httpx.AsyncClient(base_url=stack.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=20) as c:
        body = {"topic": "Should we adopt a monorepo?", "personas": ["Analyzer", "Moderator"], "maxRounds": 1}
        r = await c.post("/api/discussions", json=body)
        assert r.status_code == 201, r.text
        personas = {p["name"]: p for p in r.json()["personas"]}
        await c.post(f"/api/discussions/{r.json()['id']}/stop")
    assert personas["Analyzer"]["route"] == "analyzer" and "assumptions" in personas["Analyzer"]["role_prompt"]
    assert personas["Moderator"]["route"] == "moderator" and "Solution:" in personas["Moderator"]["role_prompt"]
