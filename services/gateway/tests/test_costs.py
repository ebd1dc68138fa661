"""GET /api/costs against the real cost service: every kind answers its own shape, a user sees only their
own costs and budget, and money is a fixed decimal string everywhere (never exponent notation)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from adp_gateway.server import GatewayServer, running_gateway
from adp_testing.gateway import ADMIN_KEY, assert_envelope, gateway_settings, new_user, platform_services

pytestmark = pytest.mark.slow

FIXED = re.compile(r"^-?[0-9]+\.[0-9]+$")
MONEY_FIELDS = {"cost_usd", "current", "limit", "userCost", "totalCost", "spent_usd", "limit_usd"}


@pytest_asyncio.fixture
async def stack(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str
) -> AsyncIterator[GatewayServer]:
    async with platform_services(nats_url, pg_dsn, prefix, databases, services=("llm-router", "cost")):
        settings = gateway_settings(nats_url, pg_dsn, prefix, databases.name("gateway"), redis_url)
        async with running_gateway(settings) as gw:
            yield gw


def money_values(doc: Any) -> list[Any]:
    """Every money field's value anywhere in a JSON document."""
    if isinstance(doc, dict):
        own = [v for k, v in doc.items() if k in MONEY_FIELDS and v is not None]
        return own + [x for v in doc.values() for x in money_values(v)]
    if isinstance(doc, list):
        return [x for v in doc for x in money_values(v)]
    return []


def assert_fixed_money(doc: Any) -> None:
    values = money_values(doc)
    assert values, doc
    assert all(isinstance(v, str) and FIXED.match(v) for v in values), values


async def test_costs_kinds_own_budget_and_fixed_decimal_money(stack: GatewayServer) -> None:
    async with httpx.AsyncClient(
        base_url=stack.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=20
    ) as admin:
        uid, key, _ = await new_user(admin, "spender")
        other, _, _ = await new_user(admin, "bystander")
        async with httpx.AsyncClient(
            base_url=stack.url, headers={"Authorization": f"Bearer {key}"}, timeout=20
        ) as user:
            # nothing spent yet: zero amounts are fixed decimals too
            r = await user.get("/api/costs", params={"kind": "budget"})
            assert r.status_code == 200, r.text
            assert r.json()["userCost"] == "0.000000000" and r.json()["budget"] is None
            assert_fixed_money(r.json())

            body = {"model": "default", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 20}
            assert (await user.post("/v1/chat/completions", json=body)).status_code == 200

            async def by_model() -> dict[str, Any]:
                for _ in range(200):
                    r = await user.get("/api/costs", params={"kind": "by_model"})
                    assert r.status_code == 200, r.text
                    if r.json()["rows"]:
                        return dict(r.json())
                    await asyncio.sleep(0.1)
                raise AssertionError("the call's cost never showed up")

            models = await by_model()
            assert [row["key"] for row in models["rows"]] == ["simulated/" + models["rows"][0]["key"].split("/", 1)[1]]
            assert models["rows"][0]["requests"] == 1 and models["costByProvider"] == []
            assert_fixed_money(models)

            r = await user.get("/api/costs", params={"kind": "by_user"})
            assert [row["key"] for row in r.json()["rows"]] == [uid]
            r = await user.get("/api/costs", params={"kind": "by_discussion"})
            assert r.status_code == 200 and r.json()["rows"] == [] == r.json()["costByProvider"]  # no discussion
            r = await user.get("/api/costs", params={"kind": "by_user", "userId": other})
            assert_envelope(r, 403, "FORBIDDEN")
            r = await user.get("/api/costs", params={"kind": "by_everything"})
            assert_envelope(r, 400, "VALIDATION_ERROR")

            # the user's own budget once an admin sets one (the global budget stays the admin's view)
            r = await admin.put("/api/admin/budget", json={"daily_limit_usd": "2", "user_id": uid})
            assert r.status_code == 200 and r.json()["limit_usd"] == "2.000000000", r.text
            r = await user.get("/api/costs", params={"kind": "budget"})
            own = r.json()
            assert own["budget"]["scope"] == f"user:{uid}" and own["budget"]["limit"] == "2.000000000"
            assert_fixed_money(own)
            r = await admin.get("/api/costs", params={"kind": "budget"})
            assert r.json()["budget"]["scope"] == "global"

        r = await admin.get("/api/costs", params={"kind": "by_user"})
        assert uid in {row["key"] for row in r.json()["rows"]}
        r = await admin.get("/api/costs")
        assert r.json()["costByProvider"] and r.json()["budget"]["scope"] == "global"
        assert_fixed_money(r.json())
        r = await admin.get("/api/monitoring/dashboard")
        assert_fixed_money(r.json()["costs"])
