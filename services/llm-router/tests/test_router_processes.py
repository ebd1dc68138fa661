"""Router copies as separate OS processes: breaker state shared through NATS KV, and exactly one usage
record per request id when a router is killed mid-call and the request is retried."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from adp_common.bus import Bus, wait_for
from adp_common.catalog import KV_BREAKERS
from adp_common.envelope import decode
from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.llm import BreakerState, ChatMessage, CompletionRequest, CompletionResult
from adp_testing.fake_provider import FakeProvider, Fault
from adp_testing.procs import ServiceProcesses

pytestmark = pytest.mark.slow


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider() as f:
        yield f


def router_env(fake: FakeProvider, **extra: str) -> dict[str, str]:
    env = {
        "ADP_ROUTER_PROVIDERS": json.dumps(
            {"fake": {"kind": "openai", "base_url": fake.openai_base, "api_key": "k", "models": ["fake-model"]}}
        ),
        "ADP_ROUTER_ROUTES": json.dumps({"default": ["fake/fake-model"]}),
        "ADP_ROUTER_MAX_ATTEMPTS": "1",
    }
    env.update(extra)
    return env


def req(rid: str | None = None) -> CompletionRequest:
    r = CompletionRequest(messages=[ChatMessage(role="user", content="hello")], timeout_s=10)
    return r.model_copy(update={"request_id": rid}) if rid else r


async def call(bus: Bus, r: CompletionRequest, timeout: float = 12) -> CompletionResult:
    return await bus.request(bus.catalog.llm_complete, r, timeout=timeout, response_model=CompletionResult)


async def usage_by_source(bus: Bus) -> list[tuple[str, str, str | None]]:
    msgs = await bus.stream_messages(bus.catalog.stream_name("USAGE"), bus.catalog.usage_record)
    out = []
    for m in msgs:
        env = decode(m.data)
        out.append((env.source, env.payload.request_id, env.payload.error_code))
    return out


async def test_breaker_shared_by_two_router_processes(
    bus: Bus, processes: ServiceProcesses, fake: FakeProvider
) -> None:
    env = router_env(fake, ADP_BREAKER_COOLDOWN_S="1.5", ADP_BREAKER_FAILURE_THRESHOLD="5")
    await processes.start_healthy(["llm-router"], replicas=2, extra_env=env)
    kv = await bus.kv(KV_BREAKERS)
    fake.add_fault(Fault(status=500))
    for i in range(5):
        with pytest.raises(PlatformError) as err:
            await call(bus, req())
        assert err.value.code == ErrorCode.LLM_PROVIDER_ERROR
        state = BreakerState.model_validate_json((await kv.get("fake")).value)
        assert state.state == ("open" if i == 4 else "closed"), i
    assert fake.stats.calls == 5
    # Rejected while open, by both copies (queue group spreads the requests), without calling the provider.
    rejecting: set[str] = set()
    for _ in range(40):
        with pytest.raises(PlatformError) as err:
            await call(bus, req())
        assert err.value.code == ErrorCode.NO_LLM_PROVIDER_AVAILABLE
        rejecting = {src for src, _, code in await usage_by_source(bus) if code == "NO_LLM_PROVIDER_AVAILABLE"}
        if len(rejecting) == 2:
            break
    assert len(rejecting) == 2, rejecting
    assert fake.stats.calls == 5
    # Half-open after the cooldown; two successes close it.
    fake.clear_faults()
    opened_at = BreakerState.model_validate_json((await kv.get("fake")).value).opened_at
    assert opened_at is not None
    await asyncio.sleep(max(0.0, opened_at + 1.6 - time.time()))  # the cooldown is a time span: wait it out
    r = await call(bus, req())
    assert r.provider == "fake"
    assert BreakerState.model_validate_json((await kv.get("fake")).value).state == "half_open"
    await call(bus, req())
    assert BreakerState.model_validate_json((await kv.get("fake")).value).state == "closed"
    msgs = await bus.stream_messages(bus.catalog.stream_name("OPS"), bus.catalog.ops("breaker"))
    changes = [(decode(m.data).payload.previous, decode(m.data).payload.state) for m in msgs]
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


async def test_killed_router_retried_request_is_recorded_once(
    bus: Bus, processes: ServiceProcesses, fake: FakeProvider
) -> None:
    env = router_env(fake)
    (first,) = await processes.start_healthy(["llm-router"], extra_env=env)
    fake.add_fault(Fault(delay_s=30, times=1))
    rid = "req-killed-1"
    pending = asyncio.create_task(call(bus, req(rid), timeout=4))
    assert await wait_for(lambda: asyncio.sleep(0, fake.stats.calls == 1), 10)
    processes.kill(first)
    with pytest.raises(PlatformError):
        await pending
    await processes.start_healthy(["llm-router"], extra_env=env)
    r1 = await call(bus, req(rid))
    r2 = await call(bus, req(rid))  # a second retry of the same call
    assert r1.request_id == r2.request_id == rid
    records = [x for x in await usage_by_source(bus) if x[1] == rid]
    assert len(records) == 1 and records[0][2] is None
    msgs = await bus.stream_messages(bus.catalog.stream_name("USAGE"), bus.catalog.usage_record)
    rec = decode(msgs[0].data).payload
    assert rec.output_tokens == r1.usage.output_tokens > 0
