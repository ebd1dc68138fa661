"""Fault tests on the whole platform: two copies of every service as processes, LLM calls served by fake
provider servers (real HTTP), driven only through the gateway.

Each asserts that nothing is lost, nothing is duplicated, nothing is charged twice, and that the client
sees a clean stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio

from adp_testing.fake_provider import FakeProvider, Fault, Timing
from adp_testing.platform import ADMIN_KEY, EventLog, Platform, running_platform

pytestmark = pytest.mark.slow

CHAIN = ["fake/fake-1", "fake2/fake-2"]


@dataclass
class Stack:
    platform: Platform
    fake: FakeProvider  # first choice of every route
    fake2: FakeProvider  # fallback


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(nats_url: str, pg_dsn: str) -> AsyncIterator[Stack]:
    timing = Timing(ttft_s=0.02, token_interval_s=0.02)
    async with FakeProvider(timing=timing) as fake, FakeProvider(timing=timing) as fake2:
        providers = {
            "fake": {"kind": "openai", "base_url": fake.openai_base, "api_key": "k1", "models": ["fake-1"]},
            "fake2": {"kind": "openai", "base_url": fake2.openai_base, "api_key": "k2", "models": ["fake-2"]},
        }
        env = {
            "ADP_ROUTER_SIMULATED": "never",
            "ADP_ROUTER_PROVIDERS": json.dumps(providers),
            "ADP_ROUTER_ROUTES": json.dumps({r: CHAIN for r in ("analyzer", "solver", "moderator", "default")}),
            "ADP_ROUTER_BACKOFF_INITIAL_S": "0.05",
            "ADP_BREAKER_COOLDOWN_S": "1",
            "ADP_COST_PRICE_FAKE": "1.00,2.00",
            "ADP_COST_PRICE_FAKE2": "1.00,2.00",
            "ADP_COST_BUDGET_REFRESH_S": "0.5",
            "ADP_STEP_ACK_WAIT_S": "3",
            "ADP_STEP_PROGRESS_S": "1",
            "ADP_AUTO_QUESTIONS": "false",
            "ADP_MAX_CONTINUATIONS": "0",
            "ADP_COST_ACK_WAIT_S": "3",
        }
        async with running_platform(nats_url, pg_dsn, replicas=2, env=env) as p:
            yield Stack(p, fake, fake2)


async def act(p: Platform, key: str, path: str, body: dict[str, Any] | None = None, ok: tuple[int, ...] = (200,)):
    """POST through any live gateway; retry while the discussion is busy (409) or a gateway just died."""
    deadline = time.monotonic() + 30
    while True:
        try:
            async with p.client(key) as c:
                r = await c.post(path, json=body)
            if r.status_code == 409 and "running" in r.text.lower() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                continue
            assert r.status_code in ok, (path, r.status_code, r.text)
            return r
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def ledger_tokens(p: Platform) -> tuple[int, int]:
    async with p.client(ADMIN_KEY) as admin:
        costs = (await admin.get("/api/costs")).json()
    rows = costs["costByProvider"]
    return sum(r["input_tokens"] for r in rows), sum(r["output_tokens"] for r in rows)


async def ledger_dump(p: Platform, stack: Stack) -> str:
    """Diagnostics for a ledger/provider mismatch: every ledger row and both fakes' counters."""
    import asyncpg

    from adp_common.db import with_database

    conn = await asyncpg.connect(with_database(p.procs.pg_dsn, f"cost_{p.prefix}"))
    try:
        rows = await conn.fetch(
            "SELECT request_id, provider, input_tokens, output_tokens, estimated, status FROM usage_ledger"
            " ORDER BY occurred_at"
        )
    finally:
        await conn.close()
    lines = [f"fake={stack.fake.stats.as_dict()} fake2={stack.fake2.stats.as_dict()}"]
    lines += [str(dict(r)) for r in rows]
    return "\n".join(lines)


async def test_kill_one_copy_of_each_service_mid_round(stack: Stack) -> None:
    p = stack.platform
    _, key = await p.new_user("survivor")
    r = await act(
        p,
        key,
        "/api/discussions",
        {"topic": "Design a resilient job queue for a small team.", "max_rounds": 10},
        ok=(201,),
    )
    did = r.json()["id"]
    log = EventLog(p, key, did).start()
    try:
        for round_no, victim in enumerate(("dialogue", "llm-router", "cost", "alerts", "gateway"), start=1):
            if round_no > 1:
                await act(p, key, f"/api/discussions/{did}/proceed")
            # Wait until this round is streaming (its first turn started and produced text), then kill.
            await log.wait_until(
                lambda n=round_no: any(
                    e.get("event") == "message-chunk" and e["data"].get("round") == n for e in log.events
                ),
                timeout=60,
                what=f"round {round_no} streaming",
            )
            target = p.copies(victim)[0]
            p.kill(target)
            await log.wait_for("round-complete", round_no, timeout=90)
            # Bring the killed copy back so the next round again has two of everything.
            await p.restart(target)

        assert log.reconnects >= 1, "the client should have been cut off by the gateway kill"
        async with p.client(key) as c:
            view = (await c.get(f"/api/discussions/{did}")).json()
        turns = [(m["round"], m["turn"]) for m in view["messages"]]
        assert len(turns) == len(set(turns)) == 15, turns  # 5 rounds x 3 turns, each stored once
        # The client saw every durable event exactly once, in order, across the reconnect.
        ids = log.durable_ids()
        assert ids == sorted(ids) and len(ids) == len(set(ids))
        assert ids == list(range(ids[0], ids[0] + len(ids))), "no durable event missing"
        completed = [e["data"]["message"]["id"] for e in log.named("message-complete")]
        assert sorted(completed) == sorted(m["id"] for m in view["messages"])
        assert not log.named("error"), log.named("error")
    finally:
        await log.stop()

    # Nothing charged twice, nothing lost: the ledger equals what the providers reported.
    expected = (
        stack.fake.stats.input_tokens + stack.fake2.stats.input_tokens,
        stack.fake.stats.output_tokens + stack.fake2.stats.output_tokens,
    )
    for _ in range(60):  # the surviving cost copies catch up within seconds
        if (got := await ledger_tokens(p)) == expected:
            break
        await asyncio.sleep(0.5)
    assert got == expected, await ledger_dump(p, stack)


async def test_provider_faults_fallback_breaker_and_clean_error(stack: Stack) -> None:
    p, fake, fake2 = stack.platform, stack.fake, stack.fake2
    _, key = await p.new_user("faulty")
    # 429 with Retry-After: the router waits and retries; the round completes on the first provider.
    fake.add_fault(Fault(status=429, retry_after=0.1, times=1))
    r = await act(p, key, "/api/discussions", {"topic": "Plan a database migration with zero downtime."}, ok=(201,))
    did = r.json()["id"]
    base = f"/api/discussions/{did}"
    log = EventLog(p, key, did).start()
    try:
        first = await log.wait_for("round-complete", 1, timeout=60)
        assert {m["provider"] for m in first[-1]["data"]["round"]["messages"]} == {"fake"}

        # The first provider is down hard (500 on every call): fallback to the second for the whole round.
        fake.add_fault(Fault(status=500))
        await act(p, key, f"{base}/proceed")
        done = await log.wait_for("round-complete", 2, timeout=60)
        assert {m["provider"] for m in done[-1]["data"]["round"]["messages"]} == {"fake2"}

        # Garbage mid-stream after tokens were sent: never switched silently; a clean error, resumable.
        fake.clear_faults()
        await asyncio.sleep(1.2)  # breaker cooldown, so the first provider is tried again
        fake.add_fault(Fault(malformed_sse=True, times=1))
        await act(p, key, f"{base}/proceed")
        err = (await log.wait_for("error", 1, timeout=60))[-1]["data"]
        assert err["code"] == "LLM_PROVIDER_ERROR", err
        await act(p, key, f"{base}/proceed")
        await log.wait_for("round-complete", 3, timeout=60)

        # Both down: a clean error with a contract code; the discussion stays resumable.
        fake.add_fault(Fault(status=500))
        fake2.add_fault(Fault(status=503))
        await act(p, key, f"{base}/proceed")
        err = (await log.wait_for("error", 2, timeout=60))[-1]["data"]
        assert err["code"] in ("LLM_PROVIDER_ERROR", "NO_LLM_PROVIDER_AVAILABLE"), err
        fake.clear_faults()
        fake2.clear_faults()
        await asyncio.sleep(1.2)  # breaker cooldown
        await act(p, key, f"{base}/proceed")
        await log.wait_for("round-complete", 4, timeout=60)

        async with p.client(key) as c:
            view = (await c.get(base)).json()
        turns = [(m["round"], m["turn"]) for m in view["messages"]]
        assert len(turns) == len(set(turns)) == 12
    finally:
        await log.stop()
        fake.clear_faults()
        fake2.clear_faults()


async def test_budget_exceeded_mid_discussion_then_resumed(stack: Stack) -> None:
    p = stack.platform
    _, key = await p.new_user("spender")
    r = await act(p, key, "/api/discussions", {"topic": "Choose a logging stack for five services."}, ok=(201,))
    did = r.json()["id"]
    log = EventLog(p, key, did).start()
    try:
        await log.wait_for("round-complete", 1, timeout=60)
        async with p.client(ADMIN_KEY) as admin:
            r = await admin.put("/api/admin/budget", json={"daily_limit_usd": "0.000001"})
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 20
            while not (await admin.get("/api/costs")).json()["budget"]["exceeded"]:
                assert time.monotonic() < deadline, "budget never reported exceeded"
                await asyncio.sleep(0.3)
        await act(p, key, f"/api/discussions/{did}/proceed")
        err = (await log.wait_for("error", 1, timeout=60))[-1]["data"]
        assert err["code"] == "BUDGET_EXCEEDED", err
        async with p.client(key) as c:
            assert (await c.get(f"/api/discussions/{did}")).json()["status"] not in ("failed", "stopped")
        async with p.client(ADMIN_KEY) as admin:
            r = await admin.put("/api/admin/budget", json={"daily_limit_usd": "1000"})
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 20
            while (await admin.get("/api/costs")).json()["budget"]["exceeded"]:
                assert time.monotonic() < deadline, "budget never cleared"
                await asyncio.sleep(0.3)
        await asyncio.sleep(1.0)  # routers watch the budget bucket; give the update a moment to land
        await act(p, key, f"/api/discussions/{did}/proceed")
        await log.wait_for("round-complete", 2, timeout=60)
    finally:
        await log.stop()
