"""adp_client against a real gateway (with router and dialogue in-process): typed answers and errors, and
events that resume after a drop without loss or repeat and end with the terminal event."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from adp_client import ApiError, AsyncClient, Client, Follow
from adp_common import sse
from adp_common.schemas.events import (
    DiscussionStoppedEvent,
    MessageChunkEvent,
    MessageCompleteEvent,
    RoundCompleteEvent,
)
from adp_gateway.server import GatewayServer, running_gateway
from adp_testing.gateway import ADMIN_KEY, gateway_settings, platform_services


def test_follow_skips_what_was_delivered_and_stops_at_the_terminal_event() -> None:
    follow = Follow(last_event_id=2)
    body = (
        sse.encode('{"discussionId":"d","message":{"id":"m","persona":"A","content":"x","turn":1,"round":1,'
                   '"createdAt":"t"}}', event="message-complete", id=2)
        + sse.encode('{"discussionId":"d","persona":"A","turn":2,"round":1,"chunk":"hi"}', event="message-chunk")
        + sse.encode('{"discussionId":"d","status":"stopped","round":1}', event="discussion-stopped", id=3)
        + sse.encode('{"discussionId":"d","code":"X","message":"late"}', event="error", id=4)
    )  # fmt: skip
    got = follow.feed(body.encode())
    assert [type(e) for e in got] == [MessageChunkEvent, DiscussionStoppedEvent]
    assert follow.ended and follow.last_event_id == 3


@pytest_asyncio.fixture
async def stack(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str
) -> AsyncIterator[GatewayServer]:
    async with platform_services(nats_url, pg_dsn, prefix, databases, services=("llm-router", "dialogue")):
        settings = gateway_settings(nats_url, pg_dsn, prefix, databases.name("gateway"), redis_url)
        async with running_gateway(settings) as gw:
            yield gw


@pytest.mark.slow
async def test_async_client_discussion_events_resume_and_end(stack: GatewayServer) -> None:
    async with AsyncClient(stack.url, ADMIN_KEY) as c:
        with pytest.raises(ApiError) as missing:
            await c.get_discussion("0" * 32)
        assert missing.value.code == "DISCUSSION_NOT_FOUND" and missing.value.status == 404
        view = await c.create_discussion("How should we name our services?", personas=["Analyzer", "Solver"])
        assert [p.route for p in view.personas] == ["analyzer", "solver"]
        follow = Follow()
        seen: list[Any] = []
        for stop_at in (MessageCompleteEvent, RoundCompleteEvent):  # drop after a message, resume to the round's end
            async with contextlib.aclosing(c.events(view.id, follow=follow)) as events:
                async for ev in events:
                    seen.append(ev)
                    if isinstance(ev, stop_at):
                        break
        durable = [e.id for e in seen if e.id is not None]
        assert durable == list(range(1, len(durable) + 1))  # nothing missed, nothing twice
        turns = [e.data.message.turn for e in seen if isinstance(e, MessageCompleteEvent)]
        assert turns == [1, 2]
        await c.stop(view.id)
        tail = [ev async for ev in c.events(view.id, follow=follow)]
        assert [e.event for e in tail][-1] == "discussion-stopped" and follow.ended
        everything = [ev async for ev in c.events(view.id)]  # a late reader: replay, terminal event, end
        ids = [e.id for e in everything]
        assert ids == sorted(ids) and len(ids) == len(set(ids)) and everything[-1].event == "discussion-stopped"


@pytest.mark.slow
async def test_blocking_client_in_a_thread(stack: GatewayServer) -> None:
    def run() -> tuple[str, list[str]]:
        with Client(stack.url, ADMIN_KEY) as c:
            view = c.create_discussion("Which queue should the team use?", max_rounds=1)
            names = [ev.event for ev in c.events(view.id) if ev.id is not None]
            return c.export(view.id, "markdown"), names

    markdown, names = await asyncio.to_thread(run)
    assert markdown.startswith("# Discussion: Which queue should the team use?")
    assert names[0] == "discussion-started" and names[-1] in ("discussion-completed", "discussion-resolved")


@pytest.mark.slow
async def test_the_readme_example_runs(stack: GatewayServer) -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    example = example.replace('"http://127.0.0.1:8080"', repr(stack.url))
    out = io.StringIO()
    await asyncio.to_thread(lambda: exec(example, {"KEY": ADMIN_KEY, "print": lambda *a: print(*a, file=out)}))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Analyzer ") and lines[-1] in ("completed", "resolved"), lines
