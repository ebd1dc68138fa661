"""Spend per API key, end to end: calls made with a key (OpenAI-compatible and a discussion's turns) are
charged to it in /api/costs?kind=by_key, and a key's own daily budget blocks it with 402 while the user's
other keys go on."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from adp_testing.platform import ADMIN_KEY, running_platform

pytestmark = pytest.mark.slow

PRICES = '{"providers": {"simulated": {"input": 100, "output": 100}}}'
CHAT = {"model": "default", "messages": [{"role": "user", "content": "Say something useful"}]}


async def by_key(c: httpx.AsyncClient) -> dict[str, dict]:
    r = await c.get("/api/costs", params={"kind": "by_key"})
    assert r.status_code == 200, r.text
    return {row["key"]: row for row in r.json()["rows"]}


async def test_spend_per_key_and_a_key_budget(nats_url: str, pg_dsn: str) -> None:
    async with running_platform(nats_url, pg_dsn, replicas=1, env={"ADP_COST_PRICES": PRICES}) as platform:
        async with platform.client(ADMIN_KEY) as admin:
            uid = (await admin.post("/api/admin/users", json={"name": "kim"})).json()["id"]
            limited = (
                await admin.post(f"/api/admin/users/{uid}/keys", json={"name": "capped", "dailyBudgetUsd": "0.000001"})
            ).json()
            free = (await admin.post(f"/api/admin/users/{uid}/keys", json={"name": "open"})).json()
            async with (
                platform.client(limited["key"]) as capped,
                platform.client(free["key"]) as open_,
            ):
                assert (await capped.post("/v1/chat/completions", json=CHAT)).status_code == 200
                # once that call is charged, the key is over its budget: 402, and only that key
                deadline = time.monotonic() + 30
                while (r := await capped.post("/v1/chat/completions", json=CHAT)).status_code == 200:
                    assert time.monotonic() < deadline, "the key's budget never blocked it"
                    await asyncio.sleep(0.3)
                assert r.status_code == 402 and r.json()["error"]["code"] == "BUDGET_EXCEEDED", r.text
                assert (await open_.post("/v1/chat/completions", json=CHAT)).status_code == 200
                d = await open_.post("/api/discussions", json={"topic": "Which database suits a small team?"})
                assert d.status_code == 201, d.text
                deadline = time.monotonic() + 60
                while True:  # the discussion's turns are charged to the key that started it
                    rows = await by_key(admin)
                    if rows.get(free["id"], {}).get("requests", 0) >= 3:
                        break
                    assert time.monotonic() < deadline, rows
                    await asyncio.sleep(0.5)
                await open_.post(f"/api/discussions/{d.json()['id']}/stop")
                assert float(rows[limited["id"]]["cost_usd"]) > 0.000001
                own = await by_key(open_)  # a user sees their own keys' spend
                assert set(own) <= {limited["id"], free["id"]} and free["id"] in own
                admin_rows = await by_key(admin)
                assert set(admin_rows) >= {limited["id"], free["id"]}
