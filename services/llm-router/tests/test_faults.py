"""Injected faults: the simulated providers of a running router fail, rate-limit, slow down and stall as the
operator's KV entries say, so breakers and fallback can be rehearsed offline; the fake provider takes the
same faults on its admin endpoint."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from adp_common.bus import Bus, wait_for
from adp_common.catalog import KV_FAULTS
from adp_common.errors import ErrorCode, PlatformError
from adp_common.llm_client import LLMClient
from adp_common.schemas.faults import ProviderFault, decide
from adp_router.config import build_config
from adp_testing.fake_provider import FakeProvider

from .test_router_bus import req, router

TWO_SIMULATED = {"simulated-b": {"kind": "simulated"}}
CHAIN = {"default": ["simulated/simulated/default", "simulated-b/default"]}


def test_decide_stacks_the_rates_in_order() -> None:
    f = ProviderFault(error_rate=0.2, rate_limit_rate=0.3, stall_rate=0.1, latency_ms=250)
    assert [decide(f, d).outcome for d in (0.0, 0.19, 0.2, 0.49, 0.5, 0.59, 0.6, 0.99)] == [
        "error", "error", "rate_limited", "rate_limited", "stall", "stall", "ok", "ok",
    ]  # fmt: skip
    assert decide(f, 0.9).delay_s == 0.25
    assert decide(ProviderFault(outage=True), 0.99).outcome == "outage"
    assert decide(None, 0.0).outcome == "ok"
    assert not ProviderFault().active and ProviderFault(latency_ms=1).active


def test_a_second_simulated_provider_needs_no_key() -> None:
    config = build_config(providers_json=TWO_SIMULATED, routes_json=CHAIN, env={})
    assert set(config.providers) == {"simulated", "simulated-b"}
    assert [str(e) for e in config.resolve("default")] == ["simulated/simulated/default", "simulated-b/default"]
    assert [str(e) for e in config.resolve("analyzer", "analyzer")] == [str(e) for e in config.resolve("default")]


async def set_fault(bus: Bus, provider: str, fault: ProviderFault | None) -> None:
    kv = await bus.kv(KV_FAULTS)
    if fault is None:
        await kv.delete(provider)
    else:
        await kv.put(provider, fault.model_dump_json().encode())


async def test_outage_opens_the_breaker_and_falls_back_then_recovers(bus: Bus, nats_url: str, prefix: str) -> None:
    async with router(
        nats_url, prefix, TWO_SIMULATED, CHAIN, breaker_failure_threshold=2, breaker_cooldown_s=0.3
    ) as app:
        client = LLMClient(bus)
        assert (await client.complete(req())).provider == "simulated"
        await set_fault(bus, "simulated", ProviderFault(outage=True))
        assert await wait_for(lambda: _has_fault(app, "simulated"), 5)
        r = await client.complete(req())
        assert r.provider == "simulated-b"  # the outage made the chain fall back
        assert app.breakers is not None
        assert await wait_for(lambda: _breaker(app, "simulated", "open"), 5)
        await set_fault(bus, "simulated", None)
        await asyncio.sleep(0.35)  # the cooldown passes: trial calls go to the recovered provider
        for _ in range(3):
            r = await client.complete(req())
        assert r.provider == "simulated"
        assert await wait_for(lambda: _breaker(app, "simulated", "closed"), 5)


async def test_rate_limit_latency_and_stall(bus: Bus, nats_url: str, prefix: str) -> None:
    async with router(nats_url, prefix, {}, {}, router_max_attempts=1) as app:
        client = LLMClient(bus)
        await set_fault(bus, "simulated", ProviderFault(rate_limit_rate=1, retry_after_s=7))
        assert await wait_for(lambda: _has_fault(app, "simulated"), 5)
        with pytest.raises(PlatformError) as err:
            await client.complete(req())
        assert err.value.code is ErrorCode.LLM_PROVIDER_ERROR and "429" in err.value.message
        await set_fault(bus, "simulated", ProviderFault(latency_ms=400))
        assert await wait_for(lambda: _fault_is(app, "simulated", ProviderFault(latency_ms=400)), 5)
        t0 = time.perf_counter()
        await client.complete(req())
        assert time.perf_counter() - t0 >= 0.4
        await set_fault(bus, "simulated", ProviderFault(stall_rate=1, stall_s=30))
        assert await wait_for(lambda: _fault_is(app, "simulated", ProviderFault(stall_rate=1, stall_s=30)), 5)
        with pytest.raises(PlatformError) as err:
            await client.complete(req(timeout_s=1))
        assert err.value.code is ErrorCode.LLM_TIMEOUT


async def test_the_fake_provider_takes_the_same_faults() -> None:
    async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as http:
        body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
        assert (await http.post("/v1/chat/completions", json=body)).status_code == 200
        put = await http.put("/_provider_fault", json={"rate_limit_rate": 1, "retry_after_s": 3})
        assert put.json()["rate_limit_rate"] == 1
        resp = await http.post("/v1/chat/completions", json=body)
        assert resp.status_code == 429 and resp.headers["retry-after"] == "3"
        await http.put("/_provider_fault", json={"outage": True})
        assert (await http.post("/v1/messages", json=body)).status_code == 503
        await http.delete("/_provider_fault")
        assert (await http.post("/v1/chat/completions", json=body)).status_code == 200


async def _has_fault(app: object, provider: str) -> bool:
    return app.faults is not None and app.faults.get(provider) is not None


async def _fault_is(app: object, provider: str, fault: ProviderFault) -> bool:
    return app.faults is not None and app.faults.get(provider) == fault


async def _breaker(app: object, provider: str, state: str) -> bool:
    return app.breakers.state(provider).state == state
