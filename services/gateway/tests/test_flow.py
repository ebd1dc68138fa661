"""End-to-end over real HTTP: gateway + real llm-router (simulated provider) + dialogue (+ cost)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from adp_common.envelope import decode
from adp_gateway.server import GatewayServer, running_gateway
from adp_testing.garbage import cyclic_garbage
from adp_testing.gateway import ADMIN_KEY, assert_envelope, gateway_settings, new_user, platform_services, read_sse

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture
async def stack(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str
) -> AsyncIterator[GatewayServer]:
    async with platform_services(nats_url, pg_dsn, prefix, databases, services=("llm-router", "dialogue")):
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


async def _user_client(gw: GatewayServer, name: str) -> tuple[str, httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=gw.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=20
    ) as admin:
        uid, key, _ = await new_user(admin, name)
    return uid, httpx.AsyncClient(base_url=gw.url, headers={"Authorization": f"Bearer {key}"}, timeout=20)


async def test_sse_resume_after_forced_disconnect_delivers_each_message_once(stack: GatewayServer) -> None:
    _, c = await _user_client(stack, "resumer")
    async with c:
        r = await c.post("/api/discussions", json={"topic": "Resume me after a disconnect", "max_rounds": 2})
        assert r.status_code == 201, r.text
        did = r.json()["id"]
        # Drop the connection right after the first completed message.
        first = await collect(c, did, "message-complete")
        last_id = max(e["id"] for e in first if "id" in e)
        got_before = [e for e in first if e["event"] == "message-complete"]
        assert len(got_before) == 1
        # Resume (header form) and read until the round completes.
        rest = await collect(c, did, "round-complete", headers={"Last-Event-ID": str(last_id)})
        assert all(e["id"] > last_id for e in rest if "id" in e)
        # Everything durable, from scratch, for comparison (query-string form of the resume id).
        full = await collect(c, did, "round-complete", headers={})
        durable_full = [(e["id"], e["event"]) for e in full if "id" in e]
        durable_seen = [(e["id"], e["event"]) for e in first + rest if "id" in e]
        assert durable_seen == durable_full  # every durable event exactly once, in order
        completes = [e["data"]["message"] for e in first + rest if e["event"] == "message-complete"]
        assert len(completes) == 3
        keys = [m.get("id") or (m.get("persona"), m.get("turn")) for m in completes]
        assert len(set(map(str, keys))) == 3
        r = await c.get(f"/api/discussions/{did}/events", params={"lastEventId": "abc"})
        assert_envelope(r, 400, "VALIDATION_ERROR")


async def test_other_users_get_404_on_every_discussion_endpoint(stack: GatewayServer) -> None:
    _, a = await _user_client(stack, "owner")
    _, b = await _user_client(stack, "intruder")
    async with a, b:
        r = await a.post("/api/discussions", json={"topic": "A private discussion topic", "max_rounds": 2})
        did = r.json()["id"]
        calls = [
            ("GET", f"/api/discussions/{did}", None),
            ("POST", f"/api/discussions/{did}/proceed", None),
            ("POST", f"/api/discussions/{did}/answers", {"roundNumber": 1, "answers": {"q1": ["a"]}}),
            ("POST", f"/api/discussions/{did}/input", {"input": "hi"}),
            ("POST", f"/api/discussions/{did}/questions", None),
            ("POST", f"/api/discussions/{did}/summary", None),
            ("POST", f"/api/discussions/{did}/stop", None),
            ("GET", f"/api/discussions/{did}/events", None),
            ("GET", f"/api/discussions/{did}/export?format=json", None),
            ("GET", f"/api/discussions/{did}/export?format=markdown", None),
        ]
        for method, path, body in calls:
            r = await b.request(method, path, json=body)
            assert_envelope(r, 404, "DISCUSSION_NOT_FOUND")
        r = await b.get("/api/discussions")
        assert r.json()["discussions"] == []
        r = await a.get(f"/api/discussions/{did}")
        assert r.status_code == 200
        r = await a.get("/api/discussions/bad.id*")
        assert_envelope(r, 400, "INVALID_DISCUSSION_ID")


async def test_socketio_flow(stack: GatewayServer) -> None:
    import socketio

    _, c = await _user_client(stack, "socket-user")
    await c.aclose()
    key = c.headers["Authorization"].removeprefix("Bearer ")
    # Unauthenticated sockets are refused.
    bad = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await bad.connect(stack.url, auth={"token": "nope"}, socketio_path="socket.io", wait_timeout=5)
    sio = socketio.AsyncClient(reconnection=False)
    received: list[tuple[str, dict[str, Any]]] = []
    round_done = asyncio.Event()

    async def on_any(event: str, data: dict[str, Any]) -> None:
        received.append((event, data))
        if event == "round-complete":
            round_done.set()

    sio.on("*", on_any)
    await sio.connect(stack.url, auth={"token": key}, socketio_path="socket.io", wait_timeout=5)
    try:
        ack = await sio.call("start-dialogue", {"topic": "A topic over the socket", "maxRounds": 2}, timeout=10)
        assert ack.get("ok"), ack
        did = ack["discussion"]["id"]
        await asyncio.wait_for(round_done.wait(), 30)
        names = [e for e, _ in received]
        assert names[0] == "discussion-started"
        assert {"message-start", "message-chunk", "message-complete", "round-complete"} <= set(names)
        assert all(d["discussionId"] == did for _, d in received)
        # bad input -> error event + error ack
        ack = await sio.call("proceed-dialogue", {"discussionId": "x.y"}, timeout=10)
        assert ack["error"]["code"] == "INVALID_DISCUSSION_ID"
        errors = [d for e, d in received if e == "error"]
        assert errors and errors[-1]["code"] == "INVALID_DISCUSSION_ID"
        # next round over the socket
        received.clear()
        round_done.clear()
        ack = await sio.call("proceed-dialogue", {"discussionId": did}, timeout=10)
        assert ack.get("ok"), ack
        await asyncio.wait_for(round_done.wait(), 30)
        assert [e for e, _ in received if e == "message-complete"]
    finally:
        await sio.disconnect()


async def test_openai_package_streams_and_non_streams(stack: GatewayServer) -> None:
    from openai import AsyncOpenAI, AuthenticationError

    _, c = await _user_client(stack, "sdk-user")
    await c.aclose()
    key = c.headers["Authorization"].removeprefix("Bearer ")
    client = AsyncOpenAI(api_key=key, base_url=stack.url + "/v1", max_retries=0, timeout=30)
    try:
        models = await client.models.list()
        assert models.data and all(m.object == "model" for m in models.data)
        model = models.data[0].id
        done = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say hello"}], max_tokens=30
        )
        assert done.object == "chat.completion"
        text = done.choices[0].message.content
        assert text and done.choices[0].finish_reason
        assert done.usage is not None and done.usage.total_tokens > 0
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Say hello"}],
            max_tokens=30,
            stream=True,
            stream_options={"include_usage": True},
        )
        parts: list[str] = []
        usage = None
        finish = None
        async for chunk in stream:
            assert chunk.object == "chat.completion.chunk"
            if chunk.usage is not None:
                usage = chunk.usage
            for ch in chunk.choices:
                parts.append(ch.delta.content or "")
                finish = ch.finish_reason or finish
        assert "".join(parts)
        assert finish is not None
        assert usage is not None and usage.completion_tokens > 0
        bad = AsyncOpenAI(api_key="wrong", base_url=stack.url + "/v1", max_retries=0)
        with pytest.raises(AuthenticationError):
            await bad.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    finally:
        await client.close()


# asyncio's own selector transport (the tests' event loop; the services run uvloop) keeps a bound method of
# itself, so each closed connection leaves that small cycle at both ends: any other cyclic garbage is ours.
TRANSPORT_CYCLE = {
    "asyncio.selector_events._SelectorSocketTransport",
    "asyncio.trsock.TransportSocket",
    "socket.socket",
    "builtins.method",
    "builtins.dict",
    "builtins.tuple",
}


async def closed_streams_leave(stack: GatewayServer, request: bytes, until: bytes, open_streams: Any) -> dict[str, int]:
    """Open a stream with a raw HTTP request, read until `until`, close the connection and wait (up to 1 s)
    until `open_streams()` is back to 0 — once to warm up, then three times counting the cyclic garbage made."""

    async def open_and_close() -> None:
        reader, writer = await asyncio.open_connection(stack.settings.http_host, stack.port)
        writer.write(request)
        head = await reader.readuntil(until)
        assert head.startswith(b"HTTP/1.1 200"), head
        writer.close()
        await writer.wait_closed()
        for _ in range(100):
            if open_streams() == 0:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the gateway did not notice the closed stream")

    await open_and_close()
    with cyclic_garbage() as found:
        for _ in range(3):
            await open_and_close()
        await asyncio.sleep(0.05)
    return {k: n for k, n in found.items() if k not in TRANSPORT_CYCLE}


async def test_a_stream_the_client_closes_leaves_no_reference_cycles(stack: GatewayServer) -> None:
    """A client that closes its event stream ends it cleanly: the stream (subscription, buffer, frames) is
    freed by reference counting and the open-stream count goes back down. Starlette's StreamingResponse
    cancelled the body instead, and the cancellation's exceptions held the whole stream in a cycle until a
    full collection (which a loaded gateway runs rarely)."""
    _, c = await _user_client(stack, "closer")
    r = await c.post("/api/discussions", json={"topic": "How should a small team adopt code review?"})
    did = r.json()["id"]
    await collect(c, did, "round-complete")
    key = c.headers["Authorization"]
    await c.aclose()
    ctx = stack.app.ctx
    assert ctx is not None
    request = f"GET /api/discussions/{did}/events HTTP/1.1\r\nHost: x\r\nAuthorization: {key}\r\n\r\n".encode()
    # the history replayed, then the client hangs up
    assert await closed_streams_leave(stack, request, b"event: round-complete", lambda: ctx.active_streams) == {}


@pytest_asyncio.fixture
async def slow_stack(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str
) -> AsyncIterator[GatewayServer]:
    """The gateway with the router only, whose simulated answers take seconds (20 tokens/s)."""
    async with platform_services(nats_url, pg_dsn, prefix, databases, services=("llm-router",), tokens_per_s=20):
        settings = gateway_settings(nats_url, pg_dsn, prefix, databases.name("gateway"), redis_url)
        async with running_gateway(settings) as gw:
            yield gw


async def test_an_openai_stream_the_client_closes_cancels_the_call_and_leaves_no_reference_cycles(
    slow_stack: GatewayServer,
) -> None:
    """A client that hangs up mid-answer on the OpenAI-compatible stream cancels the LLM call, in the gateway
    and at the router (answers take seconds here; the gateway's call must end within one, and the router's
    usage records say CONFLICT, not a finished answer), and the call's state (the gateway's stream, the
    client's subscription and wait) is freed by reference counting."""
    stack = slow_stack
    uid, c = await _user_client(stack, "oai-closer")
    model = (await c.get("/v1/models")).json()["data"][0]["id"]
    key = c.headers["Authorization"]
    await c.aclose()
    ctx = stack.app.ctx
    assert ctx is not None
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "A long story"}], "max_tokens": 2000, "stream": True}
    ).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    def open_streams() -> int:
        return len(ctx.llm._attempts)  # LLM calls in flight in this gateway copy

    # the first chunk, then the client hangs up
    assert await closed_streams_leave(stack, request, b"chat.completion.chunk", open_streams) == {}
    bus = ctx.bus
    for _ in range(30):  # well before any of the 4 answers could have ended (~5 s each)
        msgs = await bus.stream_messages(bus.catalog.stream_name("USAGE"), bus.catalog.usage_record)
        records = [r for r in (decode(m.data).payload for m in msgs) if r.user_id == uid]
        if len(records) == 4:
            break
        await asyncio.sleep(0.1)
    assert [r.error_code for r in records] == ["CONFLICT"] * 4
