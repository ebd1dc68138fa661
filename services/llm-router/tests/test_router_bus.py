"""The router in-process over real NATS, calling the fake provider over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adp_common.bus import Bus, wait_for
from adp_common.catalog import KV_BREAKERS, KV_BUDGET
from adp_common.envelope import decode
from adp_common.errors import ErrorCode, PlatformError
from adp_common.llm_client import LLMClient
from adp_common.schemas.cost import BudgetState
from adp_common.schemas.llm import (
    BreakerState,
    CancelCalls,
    ChatMessage,
    CompletionChunk,
    CompletionRequest,
    ModelList,
    ProviderStatusList,
)
from adp_common.sse import SSEEvent
from adp_router.app import RouterApp
from adp_router.pacing import ChunkEmitter, FlushTicker
from adp_router.providers.base import Endpoint, new_http_session
from adp_router.settings import RouterSettings
from adp_testing.fake_provider import DEFAULT_TEXT, FakeProvider, Fault, Timing
from adp_testing.garbage import cyclic_garbage
from adp_testing.inproc import running_service


def provider(fake: FakeProvider, kind: str = "openai", timeout_s: float = 5.0) -> dict[str, Any]:
    base = fake.openai_base if kind == "openai" else fake.anthropic_base
    return {"kind": kind, "base_url": base, "api_key": "test-key", "models": ["fake-model"], "timeout_s": timeout_s}


@contextlib.asynccontextmanager
async def router(
    nats_url: str, prefix: str, providers: dict[str, Any], routes: dict[str, list[str]] | None = None, **kw: Any
) -> AsyncIterator[RouterApp]:
    defaults: dict[str, Any] = {
        "router_backoff_initial_s": 0.01,
        "router_backoff_max_s": 0.05,
        "simulated_ttft_ms": 0,
        "simulated_tokens_per_s": 100000,
        "heartbeat_interval_s": 60,
    }
    defaults.update(kw)
    s = RouterSettings(
        nats_url=nats_url,
        subject_prefix=prefix,
        router_providers=json.dumps(providers),
        router_routes=json.dumps(routes or {"default": [f"{n}/fake-model" for n in providers]}),
        **defaults,
    )
    app = RouterApp(s)
    async with running_service("llm-router", s, app, use_database=False):
        yield app


def req(**kw: Any) -> CompletionRequest:
    return CompletionRequest(messages=[ChatMessage(role="user", content="Say something useful")], **kw)


async def usage_records(bus: Bus) -> list[Any]:
    msgs = await bus.stream_messages(bus.catalog.stream_name("USAGE"), bus.catalog.usage_record)
    return [decode(m.data).payload for m in msgs]


async def ops_events(bus: Bus, kind: str) -> list[Any]:
    msgs = await bus.stream_messages(bus.catalog.stream_name("OPS"), bus.catalog.ops(kind))
    return [decode(m.data).payload for m in msgs]


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider() as f:
        yield f


@pytest.fixture
async def fake2() -> AsyncIterator[FakeProvider]:
    async with FakeProvider(timing=Timing(text="Second provider answer.")) as f:
        yield f


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [True, False])
async def test_completion_both_protocols(
    bus: Bus, nats_url: str, prefix: str, fake: FakeProvider, kind: str, stream: bool
) -> None:
    async with router(nats_url, prefix, {"fake": provider(fake, kind)}):
        client = LLMClient(bus)
        chunks: list[CompletionChunk] = []

        async def on_chunk(c: CompletionChunk) -> None:
            chunks.append(c)

        r = await client.complete(req(user_id="u1", persona="Solver"), on_chunk if stream else None)
        assert r.text == DEFAULT_TEXT
        assert (r.provider, r.model, r.simulated) == ("fake", "fake-model", False)
        assert r.usage.input_tokens == fake.stats.input_tokens > 0
        assert r.usage.output_tokens == fake.stats.output_tokens > 0
        assert not r.usage.estimated
        if stream:
            assert [c.seq for c in chunks] == list(range(len(chunks)))
            assert "".join(c.delta for c in chunks) == DEFAULT_TEXT
            assert r.ttft_ms is not None
        else:
            assert chunks == []
        assert fake.stats.calls_by_protocol == {kind: 1}
        recs = await usage_records(bus)
        assert len(recs) == 1
        rec = recs[0]
        assert (rec.request_id, rec.status, rec.provider, rec.user_id, rec.persona) == (
            r.request_id,
            "ok",
            "fake",
            "u1",
            "Solver",
        )
        # the ledger equals what the provider reported
        assert (rec.input_tokens, rec.output_tokens) == (fake.stats.input_tokens, fake.stats.output_tokens)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_streamed_calls_reuse_one_pooled_connection(
    bus: Bus, nats_url: str, prefix: str, fake: FakeProvider, kind: str
) -> None:
    """The router stops reading at the protocol's last event; the end of the body must still be read, or
    the connection cannot go back to the pool and every call pays a new TCP connection."""
    async with router(nats_url, prefix, {"fake": provider(fake, kind)}):
        client = LLMClient(bus)

        async def on_chunk(c: CompletionChunk) -> None:
            pass

        for _ in range(5):
            r = await client.complete(req(), on_chunk)
            assert r.text == DEFAULT_TEXT
        assert fake.stats.calls == 5
        assert len(fake.stats.client_ports) == 1


async def test_missing_usage_is_estimated(bus: Bus, nats_url: str, prefix: str, fake: FakeProvider) -> None:
    fake.add_fault(Fault(no_usage=True))
    async with router(nats_url, prefix, {"fake": provider(fake)}):
        r = await LLMClient(bus).complete(req(), lambda c: asyncio.sleep(0))
        assert r.usage.estimated and r.usage.output_tokens == (len(DEFAULT_TEXT) + 3) // 4


async def test_fallback_on_500_after_retries(
    bus: Bus, nats_url: str, prefix: str, fake: FakeProvider, fake2: FakeProvider
) -> None:
    fake.add_fault(Fault(status=500))
    async with router(nats_url, prefix, {"a": provider(fake), "b": provider(fake2)}, router_max_attempts=3):
        r = await LLMClient(bus).complete(req())
        assert r.provider == "b" and r.text == "Second provider answer."
        assert fake.stats.calls == 3 and fake2.stats.calls == 1
        assert r.attempts == 4
        recs = await usage_records(bus)
        assert len(recs) == 1 and recs[0].provider == "b"


async def test_client_error_is_not_retried(bus: Bus, nats_url: str, prefix: str, fake: FakeProvider) -> None:
    fake.add_fault(Fault(status=400))
    async with router(nats_url, prefix, {"a": provider(fake)}, router_max_attempts=3):
        with pytest.raises(PlatformError) as err:
            await LLMClient(bus).complete(req())
        assert err.value.code == ErrorCode.LLM_PROVIDER_ERROR and "400" in err.value.message
        assert fake.stats.calls == 1


async def test_fallback_on_timeout(
    bus: Bus, nats_url: str, prefix: str, fake: FakeProvider, fake2: FakeProvider
) -> None:
    fake.add_fault(Fault(delay_s=3))
    providers = {"slow": provider(fake, timeout_s=0.3), "b": provider(fake2)}
    async with router(nats_url, prefix, providers):
        start = time.monotonic()
        r = await LLMClient(bus).complete(req(), lambda c: asyncio.sleep(0))
        assert r.provider == "b"
        assert time.monotonic() - start < 2.0
        assert fake.stats.calls == 1  # a timeout falls back at once, no retry on the slow provider


async def test_all_time_out_gives_llm_timeout(bus: Bus, nats_url: str, prefix: str, fake: FakeProvider) -> None:
    fake.add_fault(Fault(delay_s=3))
    async with router(nats_url, prefix, {"slow": provider(fake)}):
        start = time.monotonic()
        with pytest.raises(PlatformError) as err:
            await LLMClient(bus).complete(req(timeout_s=0.5))
        assert err.value.code == ErrorCode.LLM_TIMEOUT
        assert time.monotonic() - start < 2.0
        recs = await usage_records(bus)
        assert [(r.status, r.error_code) for r in recs] == [("error", "LLM_TIMEOUT")]


async def test_retry_after_is_honoured(bus: Bus, nats_url: str, prefix: str, fake: FakeProvider) -> None:
    fake.add_fault(Fault(status=429, retry_after=0.4, times=1))
    async with router(nats_url, prefix, {"a": provider(fake)}):
        start = time.monotonic()
        r = await LLMClient(bus).complete(req())
        assert time.monotonic() - start >= 0.4
        assert r.provider == "a" and r.attempts == 2 and fake.stats.calls == 2


async def test_retry_after_beyond_deadline_gives_up(bus: Bus, nats_url: str, prefix: str, fake: FakeProvider) -> None:
    fake.add_fault(Fault(status=429, retry_after=5))
    async with router(nats_url, prefix, {"a": provider(fake)}, router_max_attempts=5):
        start = time.monotonic()
        with pytest.raises(PlatformError) as err:
            await LLMClient(bus).complete(req(timeout_s=1.0))
        assert time.monotonic() - start < 1.0
        assert err.value.code == ErrorCode.LLM_PROVIDER_ERROR and "429" in err.value.message
        assert fake.stats.calls == 1


async def test_no_fallback_after_tokens_streamed(
    bus: Bus, nats_url: str, prefix: str, fake: FakeProvider, fake2: FakeProvider
) -> None:
    fake.add_fault(Fault(drop_after=3))
    async with router(nats_url, prefix, {"a": provider(fake), "b": provider(fake2)}):
        chunks: list[CompletionChunk] = []

        async def on_chunk(c: CompletionChunk) -> None:
            chunks.append(c)

        with pytest.raises(PlatformError) as err:
            await LLMClient(bus).complete(req(), on_chunk)
        assert err.value.code == ErrorCode.LLM_PROVIDER_ERROR
        assert fake.stats.calls == 1 and fake2.stats.calls == 0

        # the tokens that were streamed before the drop reached the caller (and were estimated in the record)
        # (tokens are coalesced into fewer chunk messages: check the text, not the message count)
        def streamed() -> list[str]:
            return "".join(c.delta for c in chunks).split()

        await wait_for(lambda: asyncio.sleep(0, len(streamed()) == 3), 2)
        assert streamed() == ["The", "fake", "provider"]
        recs = await usage_records(bus)
        assert recs[0].status == "error" and recs[0].output_tokens > 0 and recs[0].estimated

        # when the caller allows it, the router restarts on the next provider and says so in the stream
        chunks.clear()
        r = await LLMClient(bus).complete(req(fallback_after_tokens=True), on_chunk)
        assert r.provider == "b" and r.text == "Second provider answer."
        restarts = [c for c in chunks if c.restart]
        assert len(restarts) == 1 and restarts[0].provider == "b"
        after = chunks[chunks.index(restarts[0]) :]
        assert "".join(c.delta for c in after) == r.text


async def test_stall_mid_stream_times_out(bus: Bus, nats_url: str, prefix: str, fake: FakeProvider) -> None:
    fake.add_fault(Fault(stall_after=2, stall_s=10))
    async with router(nats_url, prefix, {"a": provider(fake, timeout_s=0.5)}):
        with pytest.raises(PlatformError) as err:
            await LLMClient(bus).complete(req(), lambda c: asyncio.sleep(0))
        assert err.value.code == ErrorCode.LLM_TIMEOUT


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize(
    "fault",
    [
        Fault(malformed_sse=True),
        Fault(wrong_json=True),
        Fault(drop_after=0),
        Fault(status=200, body="this is not SSE at all"),
    ],
    ids=["malformed", "wrong-json", "dropped", "garbage"],
)
@pytest.mark.parametrize("stream", [True, False])
async def test_bad_provider_output_is_a_clean_error(
    bus: Bus, nats_url: str, prefix: str, fake: FakeProvider, kind: str, fault: Fault, stream: bool
) -> None:
    fake.add_fault(fault.model_copy(update={"times": 1}))
    async with router(nats_url, prefix, {"a": provider(fake, kind)}, router_max_attempts=1):
        client = LLMClient(bus)
        with pytest.raises(PlatformError) as err:
            await client.complete(req(), (lambda c: asyncio.sleep(0)) if stream else None)
        assert err.value.code == ErrorCode.LLM_PROVIDER_ERROR
        assert "a" in err.value.message
        r = await client.complete(req())  # still serving
        assert r.text == DEFAULT_TEXT


async def test_open_breaker_falls_back_and_rejects(
    bus: Bus, nats_url: str, prefix: str, fake: FakeProvider, fake2: FakeProvider
) -> None:
    fake.add_fault(Fault(status=503))
    settings = {"router_max_attempts": 1, "breaker_failure_threshold": 3, "breaker_cooldown_s": 60}
    async with router(nats_url, prefix, {"a": provider(fake), "b": provider(fake2)}, **settings):
        client = LLMClient(bus)
        for _ in range(3):
            assert (await client.complete(req())).provider == "b"
        assert fake.stats.calls == 3
        kv = await bus.kv(KV_BREAKERS)
        state = BreakerState.model_validate_json((await kv.get("a")).value)
        assert state.state == "open"
        r = await client.complete(req())
        assert r.provider == "b" and fake.stats.calls == 3  # the open breaker skipped 'a'
        status = await bus.request(bus.catalog.llm_providers, {}, response_model=ProviderStatusList)
        a = next(p for p in status.providers if p.provider == "a")
        assert a.breaker == "open" and not a.available and a.success_rate == 0.0
        changes = await ops_events(bus, "breaker")
        assert [(c.provider, c.previous, c.state) for c in changes] == [("a", "closed", "open")]
    async with router(nats_url, prefix, {"a": provider(fake)}, **settings):
        with pytest.raises(PlatformError) as err:
            await LLMClient(bus).complete(req())
        assert err.value.code == ErrorCode.NO_LLM_PROVIDER_AVAILABLE
        assert fake.stats.calls == 3


async def test_budget_gate(bus: Bus, nats_url: str, prefix: str, fake: FakeProvider) -> None:
    kv = await bus.kv(KV_BUDGET)
    today = time.strftime("%Y-%m-%d", time.gmtime())

    def state(scope: str, exceeded: bool) -> bytes:
        return (
            BudgetState(scope=scope, day=today, spent_usd=5, limit_usd=4, percentage=1.25, exceeded=exceeded)
            .model_dump_json()
            .encode()
        )

    async with router(nats_url, prefix, {"a": provider(fake)}):
        client = LLMClient(bus)
        await kv.put("user.u1", state("user:u1", True))

        async def rejected(user: str) -> bool:
            try:
                await client.complete(req(user_id=user))
                return False
            except PlatformError as err:
                assert err.code == ErrorCode.BUDGET_EXCEEDED
                return True

        assert await wait_for(lambda: rejected("u1"), 5)
        assert not await rejected("u2")
        await kv.put("global", state("global", True))
        # until the router has the new state, a poll's call still goes through: count after it has it
        assert await wait_for(lambda: rejected("u2"), 5)
        calls = fake.stats.calls
        assert await rejected("u2") and await rejected("u1")
        assert fake.stats.calls == calls  # a refused call never reaches a provider
        await kv.put("global", state("global", False))
        await kv.put("user.u1", state("user:u1", False))
        assert await wait_for(lambda: _not(rejected("u1")), 5)
        recs = await usage_records(bus)
        assert any(r.error_code == "BUDGET_EXCEEDED" for r in recs)


async def _not(coro: Any) -> bool:
    return not await coro


async def test_budget_free_only_mode(bus: Bus, nats_url: str, prefix: str, fake: FakeProvider) -> None:
    kv = await bus.kv(KV_BUDGET)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    exceeded = BudgetState(scope="global", day=today, spent_usd=5, limit_usd=4, percentage=1.25, exceeded=True)
    await kv.put("global", exceeded.model_dump_json().encode())
    local = {**provider(fake), "free": True}
    routes = {"default": ["paid/fake-model", "local/fake-model"]}
    async with router(
        nats_url, prefix, {"paid": provider(fake), "local": local}, routes, router_budget_mode="free_only"
    ):
        r = await LLMClient(bus).complete(req())
        assert r.provider == "local"


async def test_simulated_default_when_no_keys(bus: Bus, nats_url: str, prefix: str) -> None:
    s = RouterSettings(nats_url=nats_url, subject_prefix=prefix, simulated_ttft_ms=0, simulated_tokens_per_s=100000)
    async with running_service("llm-router", s, RouterApp(s), use_database=False):
        client = LLMClient(bus)
        chunks: list[CompletionChunk] = []

        async def on_chunk(c: CompletionChunk) -> None:
            chunks.append(c)

        rq = req(route="analyzer", persona="Analyzer", task="turn", round=2)
        r = await client.complete(rq, on_chunk)
        assert (r.provider, r.model, r.simulated) == ("simulated", "simulated/analyzer", True)
        assert "".join(c.delta for c in chunks) == r.text and "Solver" in r.text
        again = await client.complete(rq.model_copy(update={"request_id": "other"}))
        assert again.text == r.text  # deterministic
        assert r.usage.output_tokens > 0 and r.usage.input_tokens > 0
        models = await bus.request(bus.catalog.llm_models, {}, response_model=ModelList)
        assert {m.id for m in models.models} >= {"simulated/analyzer", "simulated/solver", "simulated/moderator"}
        assert all(m.simulated for m in models.models)


async def test_same_request_id_is_recorded_once(bus: Bus, nats_url: str, prefix: str, fake: FakeProvider) -> None:
    async with router(nats_url, prefix, {"a": provider(fake)}):
        client = LLMClient(bus)
        rq = req()
        await client.complete(rq)
        await client.complete(rq)
        recs = await usage_records(bus)
        assert [r.request_id for r in recs] == [rq.request_id]


async def test_relayed_chunks_go_straight_to_the_relay_subject(
    bus: Bus, nats_url: str, prefix: str, fake: FakeProvider
) -> None:
    """A call with relay_subject streams its chunks there in the caller's template; a re-sent one says restart."""
    relay = bus.catalog.subject("relay", "test")
    got: list[dict[str, Any]] = []

    async def on_msg(msg: Any) -> None:
        got.append(json.loads(msg.data))

    sub = await bus.nc.subscribe(relay, cb=on_msg)
    template = {"discussionId": "d1", "seq": 0, "event": "message-chunk", "data": {"persona": "Solver", "turn": 2}}
    async with router(nats_url, prefix, {"a": provider(fake)}):
        r = await LLMClient(bus).complete(req(relay_subject=relay, relay_template=template))
        await bus.nc.flush()
        assert got and all(m["event"] == "message-chunk" and m["data"]["persona"] == "Solver" for m in got)
        assert "".join(m["data"]["chunk"] for m in got) == r.text
        assert not any(m["data"].get("restart") for m in got)
        got.clear()
        await LLMClient(bus).complete(req(relay_subject=relay, relay_template=template, relay_restart=True))
        await bus.nc.flush()
        assert got[0]["data"]["restart"] is True and not any(m["data"].get("restart") for m in got[1:])
    await sub.unsubscribe()


async def test_coalescing_ticker_sends_first_token_at_once_then_every_stream_per_tick(bus: Bus) -> None:
    """Over real NATS: the first token of a stream leaves alone and at once; later tokens of every stream wait
    for the shared tick and leave as one message per stream; the final flush sends what is left."""
    got: list[tuple[float, dict[str, Any]]] = []

    async def on_msg(msg: Any) -> None:
        got.append((time.perf_counter(), json.loads(msg.data)))

    subject = bus.catalog.llm_stream("ticker-test")
    sub = await bus.nc.subscribe(subject, cb=on_msg)
    ticker = FlushTicker(lambda: 0.1, slots=1)
    a = ChunkEmitter(bus.nc, subject, "a", ticker)
    b = ChunkEmitter(bus.nc, subject, "b", ticker)
    for e in (a, b):
        e.set_provider("p", "m")
    t0 = time.perf_counter()
    await a.emit("A1 ")
    await b.emit("B1 ")
    for i in range(2, 5):  # three more tokens each, well inside one tick
        await a.emit(f"A{i} ")
        await b.emit(f"B{i} ")
    await bus.nc.flush()
    await asyncio.sleep(0.03)
    assert [m["delta"] for _, m in got] == ["A1 ", "B1 "]  # first tokens: at once
    await wait_for(lambda: asyncio.sleep(0, len(got) == 4), 1)
    tick = got[2:]
    assert {m["request_id"]: m["delta"] for _, m in tick} == {"a": "A2 A3 A4 ", "b": "B2 B3 B4 "}
    assert all(0.08 <= t - t0 for t, _ in tick)  # waited for the tick
    assert [m["seq"] for _, m in got if m["request_id"] == "a"] == [0, 1]
    await a.emit("A5.")
    await a.flush()  # the end of a call does not wait for the tick
    await bus.nc.flush()
    await wait_for(lambda: asyncio.sleep(0, len(got) == 5), 1)
    assert got[-1][1]["delta"] == "A5." and not any(ticker.waiting)
    await sub.unsubscribe()


async def test_paced_reads_take_every_token_that_arrived_meanwhile(fake: FakeProvider) -> None:
    """A streamed body read with `pace` (held ~60 ms before each read after the first): far fewer reads than
    tokens, and every token still arrives, in order."""
    words = [f"w{i}" for i in range(20)]
    fake.timing = Timing(token_interval_s=0.005, text=" ".join(words))
    reads = 0

    async def pace(transport: asyncio.Transport | None) -> None:
        nonlocal reads
        reads += 1
        if reads > 1:
            await asyncio.sleep(0.06)

    session = new_http_session(4)
    try:
        endpoint = Endpoint(session, "fake", fake.openai_base + "/chat/completions", {}, 5.0)
        body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        got: list[str] = []

        def text_of(ev: SSEEvent) -> str | None:
            if ev.data == "[DONE]":
                return None
            return "".join(c["delta"].get("content", "") for c in json.loads(ev.data)["choices"])

        deltas = endpoint.deltas(body, 5.0, text_of, is_last=lambda ev: ev.data == "[DONE]", pace=pace)
        async with contextlib.aclosing(deltas):
            async for text in deltas:
                got.append(text)
    finally:
        await session.close()
    assert "".join(got).split() == words
    assert 2 <= reads <= 6  # ~100 ms of tokens in reads held 60 ms apart; unpaced it is one read per token
    assert len(got) <= reads  # at most one delta per read: the tokens a read took, joined


async def test_emitter_pace_sends_what_was_read_then_waits_for_the_tick(bus: Bus) -> None:
    got: list[dict[str, Any]] = []

    async def on_msg(msg: Any) -> None:
        got.append(json.loads(msg.data))

    subject = bus.catalog.llm_stream("pace-test")
    sub = await bus.nc.subscribe(subject, cb=on_msg)
    ticker = FlushTicker(lambda: 0.1, slots=1)
    e = ChunkEmitter(bus.nc, subject, "p", ticker)
    e.set_provider("p", "m")
    t0 = time.perf_counter()
    await e.pace()  # nothing sent yet: the first read is not held
    assert time.perf_counter() - t0 < 0.05
    await e.emit("one ")
    await e.emit("two ")
    await e.emit("three ")
    t1 = time.perf_counter()
    await e.pace()  # sends "two three" now, then holds until the tick
    assert time.perf_counter() - t1 >= 0.05
    await bus.nc.flush()
    await wait_for(lambda: asyncio.sleep(0, len(got) == 2), 1)
    assert [m["delta"] for m in got] == ["one ", "two three "]
    await sub.unsubscribe()


async def test_emitter_pace_holds_the_socket_unread_until_the_tick(bus: Bus) -> None:
    """While a paced read waits for its tick, the provider connection's transport is paused (bytes wait in
    the kernel, one read takes them all); it reads again after the tick."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    transport = writer.transport
    assert isinstance(transport, asyncio.Transport)
    ticker = FlushTicker(lambda: 0.1, slots=1)
    e = ChunkEmitter(bus.nc, bus.catalog.llm_stream("hold-test"), "h", ticker)
    e.set_provider("p", "m")
    try:
        await e.pace(transport)  # before the first token: not held
        assert transport.is_reading()
        await e.emit("one ")
        await e.emit("two ")
        waiting = asyncio.create_task(e.pace(transport))
        await asyncio.sleep(0.02)
        assert not transport.is_reading()
        await waiting
        assert transport.is_reading()
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


async def tick_times(
    bus: Bus, ticker: FlushTicker, streams: int, ticks: int
) -> tuple[list[int], dict[int, list[float]]]:
    """`streams` emitters on `ticker` each wait for `ticks` ticks: the slots they were dealt, and when each
    slot woke (s from the start)."""
    emitters = [ChunkEmitter(bus.nc, bus.catalog.llm_stream("ticks"), str(i), ticker) for i in range(streams)]
    woke: dict[int, list[float]] = {}
    t0 = time.perf_counter()

    async def wait(e: ChunkEmitter) -> None:
        for _ in range(ticks):
            await ticker.next_tick(e.slot)
            woke.setdefault(e.slot, []).append(time.perf_counter() - t0)

    await asyncio.gather(*(wait(e) for e in emitters))
    return [e.slot for e in emitters], woke


async def test_ticker_slots_spread_streams_over_the_period(bus: Bus) -> None:
    """With 4 slots, 8 streams tick in 4 groups of 2, a quarter period apart; each still once per period."""
    ticker = FlushTicker(lambda: 0.2, slots=4)
    slots, woke = await tick_times(bus, ticker, 8, 2)
    assert sorted(slots) == [0, 0, 1, 1, 2, 2, 3, 3]
    firsts = sorted(min(ts) for ts in woke.values())
    assert all(0.03 <= b - a <= 0.08 for a, b in itertools.pairwise(firsts))  # ~50 ms apart
    for ts in woke.values():
        ts.sort()
        assert 0.17 <= ts[-1] - ts[0] <= 0.25  # one tick per period for each stream


async def test_ticker_serves_several_slots_per_wake_up_when_the_period_is_short(bus: Bus) -> None:
    """24 slots over a 24 ms period would tick every 1 ms; with min_tick_s 6 ms one wake-up serves 6 slots
    (4 wake-ups per period), and each stream still gets one tick per period."""
    _, woke = await tick_times(bus, FlushTicker(lambda: 0.024, slots=24, min_tick_s=0.006), 24, 5)
    first = {slot: min(ts) for slot, ts in woke.items()}
    # the first wake-up serves slots 1-6, the next 7-12: together within a group (not 1 ms apart), 6 ms between
    assert first[6] - first[1] < 0.0025 and first[12] - first[7] < 0.0025
    assert first[7] - first[6] >= 0.004
    for ts in woke.values():
        ts.sort()
        assert 0.07 <= ts[-1] - ts[0] <= 0.14  # four periods between the first and the fifth tick


async def streamed_calls(bus: Bus, *requests: CompletionRequest) -> list[asyncio.Task[Any]]:
    """Start streamed calls; return their tasks once a first chunk has arrived."""
    client = LLMClient(bus)
    first = asyncio.Event()

    async def on_chunk(_: CompletionChunk) -> None:
        first.set()

    calls = [asyncio.create_task(client.complete(r, on_chunk)) for r in requests]
    await asyncio.wait_for(first.wait(), 5)
    return calls


async def cancelled_at_once(bus: Bus, call: asyncio.Task[Any], cancel: CancelCalls) -> None:
    """Send `cancel`; the call must fail with CONFLICT (naming the reason) well within a second — not the
    ~2 s the rest of its answer takes."""
    t0 = time.perf_counter()
    await bus.publish(bus.catalog.llm_cancel, cancel)
    with pytest.raises(PlatformError) as cancelled:
        await asyncio.wait_for(call, 5)
    assert time.perf_counter() - t0 < 1.0
    assert cancelled.value.code == ErrorCode.CONFLICT and cancel.reason in cancelled.value.message


async def test_cancel_stops_a_discussions_call_and_charges_what_streamed(
    bus: Bus, nats_url: str, prefix: str, fake: FakeProvider
) -> None:
    """A cancel for the discussion (sent when it is stopped) cuts the provider call mid-stream: the caller
    gets CONFLICT at once, the provider never finishes the answer, and the usage record charges the tokens
    streamed so far — once."""
    words = [f"w{i}" for i in range(40)]
    fake.timing = Timing(token_interval_s=0.05, text=" ".join(words))
    async with router(nats_url, prefix, {"fake": provider(fake)}) as app:
        assert app.router is not None
        (call,) = await streamed_calls(bus, req(user_id="u1", discussion_id="d-cancel", request_id="cancel-1"))
        await bus.publish(bus.catalog.llm_cancel, CancelCalls(discussion_id="other"))  # someone else's: no effect
        await asyncio.sleep(0.1)
        assert not call.done()
        await cancelled_at_once(bus, call, CancelCalls(discussion_id="d-cancel", reason="discussion stopped"))
        assert app.router.inflight.by_discussion == {}
        await asyncio.sleep(2.5)  # past the end the answer would have had
        assert fake.stats.calls == 1 and fake.stats.completed == 0
        recs = [r for r in await usage_records(bus) if r.request_id == "cancel-1"]
    assert len(recs) == 1
    assert recs[0].error_code == "CONFLICT" and recs[0].status == "error"
    assert 0 < recs[0].output_tokens < 40 and recs[0].estimated


async def test_cancel_by_request_id_stops_that_call_only(
    bus: Bus, nats_url: str, prefix: str, fake: FakeProvider
) -> None:
    """A cancel naming one request id (an OpenAI-compatible client hung up) cuts that call, however it was
    made (no discussion), and no other: the caller gets CONFLICT at once and only what streamed is charged."""
    fake.timing = Timing(token_interval_s=0.05, text=" ".join(f"w{i}" for i in range(40)))
    async with router(nats_url, prefix, {"fake": provider(fake)}) as app:
        assert app.router is not None
        call, other = await streamed_calls(
            bus, req(user_id="u1", request_id="cancel-r1"), req(user_id="u1", request_id="keep-r2")
        )
        await cancelled_at_once(bus, call, CancelCalls(request_id="cancel-r1", reason="client disconnected"))
        assert (await asyncio.wait_for(other, 5)).text  # the other call ran to its end
        assert app.router.inflight.by_request == {}
        recs = {r.request_id: r for r in await usage_records(bus)}
    assert recs["cancel-r1"].error_code == "CONFLICT" and 0 < recs["cancel-r1"].output_tokens < 40
    assert recs["keep-r2"].status == "ok"


async def test_keepalives_flow_while_calls_run_and_stop_with_them(
    bus: Bus, nats_url: str, prefix: str, fake: FakeProvider
) -> None:
    """Every call in flight gets a keepalive about every `router_keepalive_s` (one clock for all calls),
    and none once it has ended."""
    fake.timing = Timing(ttft_s=1.2, text="Slow to start.")
    seen: dict[str, list[float]] = {"a": [], "b": []}

    async def count(msg: Any) -> None:
        body = json.loads(msg.data)
        if body.get("keepalive"):
            seen[body["request_id"]].append(time.monotonic())

    sub = await bus.nc.subscribe(bus.catalog.llm_stream("*"), cb=count)
    try:
        async with router(nats_url, prefix, {"p": provider(fake)}, router_keepalive_s=0.2) as app:
            client = LLMClient(bus)
            t0 = time.monotonic()
            a, b = await asyncio.gather(
                client.complete(req(request_id="a", stream=True)), client.complete(req(request_id="b", stream=True))
            )
            ended = time.monotonic()
            assert a.text and b.text
            await asyncio.sleep(0.6)
            assert app.keepalives is not None and not app.keepalives.calls
    finally:
        await sub.unsubscribe()
    for times in seen.values():
        assert 4 <= len(times) <= 7, times  # ~1.2 s / 0.2 s, give or take a check of the clock (0.025 s)
        assert times[0] - t0 >= 0.19 and all(t <= ended for t in times)


@pytest.mark.parametrize("shape", ["relayed", "on_chunk", "whole", "anthropic", "fallback"])
async def test_finished_calls_leave_no_reference_cycles(
    bus: Bus, nats_url: str, prefix: str, fake: FakeProvider, fake2: FakeProvider, shape: str
) -> None:
    """A call's state (client subscription, router emitter, retries) is freed by reference counting as the
    call ends: the cyclic GC, which a loaded service runs rarely, finds nothing of it. Both ends of the call
    run in this process. Per-call cycles had made the router's and the dialogue's memory grow with every
    call until a full collection."""
    kind = "anthropic" if shape == "anthropic" else "openai"
    providers = {"a": provider(fake, kind), "b": provider(fake2)}
    relay = bus.catalog.subject("relay", "gc")
    template = {"discussionId": "d1", "seq": 0, "event": "message-chunk", "data": {"persona": "Solver", "turn": 1}}

    async def on_chunk(_: CompletionChunk) -> None:
        return None

    async def call() -> None:
        if shape == "relayed":
            await client.complete(req(relay_subject=relay, relay_template=template))
        else:
            await client.complete(req(), on_chunk if shape != "whole" else None)

    async with router(nats_url, prefix, providers, router_max_attempts=2):
        client = LLMClient(bus)
        await call()  # first-call work (pooled connection, caches) before counting
        if shape == "fallback":
            fake.add_fault(Fault(status=500))
        with cyclic_garbage() as found:
            for _ in range(5):
                await call()
            await asyncio.sleep(0.05)  # the calls' last tasks (reply wait, unsubscribe) finish
        assert dict(found) == {}
        if shape == "fallback":
            assert fake2.stats.calls == 5


async def test_chunk_interval_follows_the_event_loop_lag(nats_url: str, prefix: str, fake: FakeProvider) -> None:
    # the runtime's lag meter, the router's interval and its gauge wired together: a stalled loop (here a
    # blocking sleep; under load, a machine short of CPU) makes the chunks coarser, and that passes
    async with router(nats_url, prefix, {"p1": provider(fake)}) as app:
        rt = app.rt
        assert rt is not None
        base = app.settings.router_chunk_interval_ms / 1000

        def interval_and_expected() -> tuple[float | None, float]:
            # read together (no await between): the interval the router uses for the lag it sees now
            lag_ms = rt.loop_lag_recent_s * 1000
            expected = base if lag_ms <= 3.0 else min(1.0, base * lag_ms / 3.0)
            return rt.metrics.registry.get_sample_value("adp_router_chunk_interval_seconds"), expected

        await asyncio.sleep(0.2)
        idle, expected = interval_and_expected()
        assert idle == pytest.approx(expected)
        time.sleep(0.4)  # a blocking call: the stall under test
        await asyncio.sleep(0.1)
        stalled, expected = interval_and_expected()
        assert stalled == pytest.approx(expected) and stalled > 1.5 * base
        await asyncio.sleep(1.5)  # on time again: the lag decays, and the interval with it
        later, expected = interval_and_expected()
        assert later == pytest.approx(expected) and later < stalled
