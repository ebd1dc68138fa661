"""End to end: two copies of every service as separate processes, driven only through the gateway.

A whole discussion (rounds, questions and answers, user input, a summary, resolution, export), the
OpenAI-compatible API, and costs and alerts showing what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
import pytest_asyncio

from adp_client import ApiError
from adp_common.bus import Bus
from adp_common.schemas.dialogue import DiscussionView
from adp_common.schemas.ops import BudgetEvent
from adp_testing.platform import ADMIN_KEY, EventLog, Platform, running_platform

pytestmark = pytest.mark.slow

TOPIC = "How should a small team roll out feature flags without breaking production?"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def platform(nats_url: str, pg_dsn: str) -> AsyncIterator[Platform]:
    async with running_platform(nats_url, pg_dsn, replicas=2) as p:
        yield p


async def act(action: Callable[[], Awaitable[DiscussionView]], timeout: float = 30) -> DiscussionView:
    """Run an action, retrying while the discussion is busy with an automatic step (409 CONFLICT)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await action()
        except ApiError as err:
            if err.status == 409 and time.monotonic() < deadline and "running" in err.message.lower():
                await asyncio.sleep(0.1)
                continue
            raise


async def test_full_discussion_through_the_gateway(platform: Platform) -> None:
    _, key = await platform.new_user("alice")
    async with platform.api(key) as c:
        did = (await c.create_discussion(TOPIC, max_rounds=12)).id
        log = EventLog(platform, key, did).start()
        try:
            await log.wait_for("round-complete", 1)

            # Questions for the user, answered; then the next round runs.
            await act(lambda: c.ask_questions(did))
            qsets = await log.wait_for("questions-generated", 1)
            qset = qsets[-1]["data"]["questionSet"]
            assert 2 <= len(qset["questions"]) <= 5
            answers = {q["id"]: [q["options"][0]["id"]] for q in qset["questions"]}
            await act(lambda: c.answer(did, answers, qset["roundNumber"]))
            await log.wait_for("round-complete", 2)

            # Free user input joins as a User message, then the next round runs.
            await act(lambda: c.send_input(did, "Please keep the rollout reversible within minutes."))
            await log.wait_for("round-complete", 3)

            await act(lambda: c.summarise(did))
            await log.wait_for("summary-created", 1)

            # Proceed until the personas resolve it (not before round 5).
            while not log.named("discussion-resolved"):
                done = len(log.named("round-complete"))
                assert done < 12, "no resolution by max rounds"
                await act(lambda: c.proceed(did))
                await log.wait_until(lambda n=done: len(log.named("round-complete")) > n)
                if len(log.named("round-complete")) >= 5:
                    # resolution is judged right after the round
                    with contextlib.suppress(TimeoutError):
                        await log.wait_until(lambda: bool(log.named("discussion-resolved")), timeout=3)
            resolved = log.named("discussion-resolved")[0]["data"]
            assert 500 <= len(resolved["finalAnswer"]) <= 1000, len(resolved["finalAnswer"])

            view = (await c.get_discussion(did)).model_dump(mode="json")
            assert view["status"] == "resolved"
            rounds = max(m["round"] for m in view["messages"])
            assert rounds >= 5
            ai = [m for m in view["messages"] if m["persona"] != "User"]
            turns = [(m["round"], m["turn"]) for m in ai]
            assert len(turns) == len(set(turns)) == 3 * rounds, "every turn stored exactly once"
            assert [m["persona"] for m in ai[:3]] == ["Analyzer", "Solver", "Moderator"]
            assert any(m["persona"] == "User" for m in view["messages"])
            assert view["summaries"], "summary kept"

            # What the client saw: every durable event once, in order, every stored message completed once.
            ids = log.durable_ids()
            assert ids == sorted(set(ids))
            completed = [e["data"]["message"]["id"] for e in log.named("message-complete")]
            assert len(completed) == len(set(completed))
            stored_ids = {m["id"] for m in view["messages"] if m["persona"] != "User"}
            assert stored_ids <= set(completed)
            # Live chunks add up to the stored text of every turn streamed after the client subscribed.
            for m in ai:
                if (m["round"], m["turn"]) == (1, 1):
                    continue  # may have started before the stream was opened (chunks are live-only)
                streamed = "".join(
                    e["data"]["chunk"]
                    for e in log.named("message-chunk")
                    if (e["data"]["round"], e["data"]["turn"]) == (m["round"], m["turn"])
                )
                assert streamed.split() == m["content"].split(), (m["round"], m["turn"])

            md = await c.export(did, "markdown")
            assert TOPIC in md and "Analyzer" in md
            assert json.loads(await c.export(did, "json"))["id"] == did
        finally:
            await log.stop()

    # The other user sees nothing of it.
    _, other = await platform.new_user("mallory")
    async with platform.api(other, gateway=1) as c2:
        with pytest.raises(ApiError) as hidden:
            await c2.get_discussion(did)
        assert hidden.value.status == 404 and hidden.value.code == "DISCUSSION_NOT_FOUND"
        assert await c2.list_discussions() == []

    # Costs: every LLM call was recorded (simulated calls cost 0 but count).
    async with platform.client(ADMIN_KEY) as admin:
        deadline = time.monotonic() + 20
        while True:
            costs = (await admin.get("/api/costs")).json()
            rows = {row["key"]: row for row in costs["costByProvider"]}
            if rows.get("simulated", {}).get("requests", 0) >= 3 * rounds:
                break
            assert time.monotonic() < deadline, costs
            await asyncio.sleep(0.5)
        assert costs["budget"]["exceeded"] is False
        dash = (await admin.get("/api/monitoring/dashboard")).json()
        assert dash["providers"], dash


async def test_openai_compatible_api_through_either_gateway(platform: Platform) -> None:
    from openai import AsyncOpenAI

    _, key = await platform.new_user("sdk-user")
    for base in platform.gateways:
        client = AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)
        models = await client.models.list()
        assert any("simulated" in m.id for m in models.data)
        resp = await client.chat.completions.create(
            model="solver", messages=[{"role": "user", "content": "Say something useful."}]
        )
        assert resp.choices[0].message.content and resp.usage.completion_tokens > 0
        parts: list[str] = []
        usage = None
        stream = await client.chat.completions.create(
            model="solver",
            messages=[{"role": "user", "content": "Stream please."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            if chunk.usage:
                usage = chunk.usage
        assert "".join(parts) and usage is not None and usage.completion_tokens > 0
        await client.close()


async def test_alert_fires_shows_in_api_and_is_acknowledged(platform: Platform) -> None:
    """A budget-exceeded fact on the bus becomes one alert that operators see and acknowledge."""
    bus = await Bus.connect(platform.nats_url, prefix=platform.prefix)
    try:
        ev = BudgetEvent(
            scope="global",
            day=datetime.now(UTC).date().isoformat(),
            kind="exceeded",
            spent_usd="12.00",
            limit_usd="10.00",
            percentage=1.2,
        )
        await bus.publish_event(bus.catalog.ops("budget"), ev)
    finally:
        await bus.close(grace=1)
    async with platform.client(ADMIN_KEY, gateway=1) as admin:
        deadline = time.monotonic() + 20
        while True:
            alerts = (await admin.get("/api/alerts")).json()["alerts"]
            budget = [a for a in alerts if a["rule"] == "budget_exceeded" and a["state"] == "firing"]
            if budget:
                break
            assert time.monotonic() < deadline, alerts
            await asyncio.sleep(0.3)
        assert len(budget) == 1
        r = await admin.post(f"/api/alerts/{budget[0]['id']}/ack")
        assert r.status_code == 200, r.text
        assert r.json()["acknowledged"] is True
