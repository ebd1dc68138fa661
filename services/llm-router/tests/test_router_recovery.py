"""Crash recovery in the router, over real NATS and the fake provider over real HTTP: one provider call per
logical call (replayed or joined, never made twice), and calls whose caller is gone are stopped."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from test_router_bus import provider, req, router, usage_records

from adp_common.bus import Bus, wait_for
from adp_common.catalog import KV_LLM_RESULTS
from adp_common.llm_client import LLMClient
from adp_common.schemas.llm import (
    CallOwnerQuery,
    CompletionChunk,
    CompletionResult,
    StoredCall,
    Usage,
)
from adp_router.calls import OnceCalls, kv_key
from adp_testing.fake_provider import DEFAULT_TEXT, FakeProvider, Fault, Timing


def replays(app: Any, how: str) -> float:
    return app.rt.metrics.registry.get_sample_value("adp_router_replays_total", {"how": how}) or 0.0


async def test_a_logical_call_made_again_replays_its_result(bus: Bus, nats_url: str, prefix: str) -> None:
    """The same logical call (a redelivered dialogue step: new request id, same call key) gets the stored
    answer: no second provider call, no second usage record, the whole text as one restarting chunk."""
    async with FakeProvider() as fake, router(nats_url, prefix, {"fake": provider(fake)}) as app:
        client = LLMClient(bus)
        first = await client.complete(req(request_id="r1.1", call_key="d1:r1t1:0:turn"))
        chunks: list[CompletionChunk] = []

        async def on_chunk(c: CompletionChunk) -> None:
            chunks.append(c)

        again = await client.complete(req(request_id="r1.2", call_key="d1:r1t1:0:turn"), on_chunk)
        other = await client.complete(req(request_id="r2.1", call_key="d1:r1t2:0:turn"))
        assert fake.stats.calls == 2  # the first and the other logical call, not the repeat
        assert replays(app, "replayed") == 1
        recs = sorted(r.request_id for r in await usage_records(bus))
    assert again.request_id == "r1.2" and other.text == first.text == again.text == DEFAULT_TEXT
    assert (again.usage, again.provider, again.model) == (first.usage, first.provider, first.model)
    assert [(c.delta, c.restart) for c in chunks] == [(DEFAULT_TEXT, True)]
    assert recs == ["r1.1", "r2.1"]  # one charge per provider call


async def test_a_logical_call_in_flight_is_joined(bus: Bus, nats_url: str, prefix: str) -> None:
    """A repeat that arrives while the first call still runs waits for that call's answer instead of
    starting a second one."""
    timing = Timing(ttft_s=0.5)
    async with FakeProvider(timing=timing) as fake, router(nats_url, prefix, {"fake": provider(fake)}) as app:
        client = LLMClient(bus)
        first = asyncio.create_task(client.complete(req(request_id="j.1", call_key="d2:r1t1:0:turn")))

        async def provider_called() -> bool:
            return fake.stats.calls > 0

        assert await wait_for(provider_called, 5, interval=0.01)
        again = await client.complete(req(request_id="j.2", call_key="d2:r1t1:0:turn"))
        assert (await first).text == again.text == DEFAULT_TEXT
        assert fake.stats.calls == 1 and replays(app, "joined") == 1
        assert [r.request_id for r in await usage_records(bus)] == ["j.1"]


async def test_a_failed_call_is_made_again(bus: Bus, nats_url: str, prefix: str) -> None:
    """Only a finished call is replayed: after a failure the same logical call goes to the provider."""
    async with FakeProvider() as fake, router(nats_url, prefix, {"fake": provider(fake)}, router_max_attempts=1):
        fake.add_fault(Fault(status=500, times=1))
        client = LLMClient(bus)
        with contextlib.suppress(Exception):
            await client.complete(req(request_id="f.1", call_key="d3:r1t1:0:turn"))
        ok = await client.complete(req(request_id="f.2", call_key="d3:r1t1:0:turn"))
    assert ok.text == DEFAULT_TEXT and fake.stats.calls == 2


async def test_a_call_the_client_re_sends_reaches_the_provider_once(bus: Bus, nats_url: str, prefix: str) -> None:
    """A router copy that is slow to be heard (its keepalives late: a NATS server frozen or moving) is given up
    by the client, which sends the same request again: it joins the call still running instead of calling the
    provider a second time, streamed or not."""
    timing = Timing(ttft_s=2.5)
    async with (
        FakeProvider(timing=timing) as fake,
        router(nats_url, prefix, {"fake": provider(fake)}, router_keepalive_s=30, router_caller_deadline_s=60) as app,
    ):
        client = LLMClient(bus, idle_timeout_s=1.0, router_attempts=3)
        chunks: list[CompletionChunk] = []

        async def on_chunk(c: CompletionChunk) -> None:
            chunks.append(c)

        plain = await client.complete(req(request_id="rs.1"))
        streamed = await client.complete(req(request_id="rs.2"), on_chunk)
        assert replays(app, "joined") + replays(app, "replayed") >= 2
    assert plain.text == streamed.text == DEFAULT_TEXT
    assert fake.stats.calls == 2  # one per request, none for the re-sent ones
    assert chunks[-1].restart and chunks[-1].delta == DEFAULT_TEXT  # a listener ends with the whole text


@contextlib.asynccontextmanager
async def copy(bus: Bus, instance: str) -> AsyncIterator[OnceCalls]:
    """The logical-call bookkeeping of one router copy, answering other copies' questions about its calls."""
    once = OnceCalls(bus, await bus.kv(KV_LLM_RESULTS, ttl=60), instance)

    async def answer(q: CallOwnerQuery, _: Any) -> Any:
        return await once.owner_query(q)

    await bus.serve(bus.catalog.llm_call_owner(instance), answer, CallOwnerQuery, name=f"owner-{instance}")
    yield once


def result(text: str) -> CompletionResult:
    return CompletionResult(request_id="x", text=text, usage=Usage(output_tokens=3), provider="p", model="m")


async def test_a_new_logical_call_waits_for_one_bucket_round_trip_and_a_fresh_one_for_none(bus: Bus) -> None:
    """Under load each round trip waits for a turn of a busy event loop and adds to the time to first token:
    a new call waits only for its claim, and a fresh one (the caller's first attempt) for nothing, its claim
    written while the provider request starts; a repeat still finds the stored result."""
    deadline = time.monotonic() + 30
    answers_before_call: list[int] = []
    loop_turns: list[int] = []  # appended by a callback due at the next turn of the event loop

    async def call() -> CompletionResult:
        answers_before_call.append(bus.nc.stats["in_msgs"] - start)
        loop_turns.append(len(turned))
        return result("new")

    turned: list[int] = []
    async with copy(bus, "router-a") as a:
        start = bus.nc.stats["in_msgs"]
        assert await a.run("n1", call, deadline, lambda err: False) == (result("new"), "called")
        assert await a.run("n1", call, deadline, lambda err: False) == (result("new"), "replayed")
        start = bus.nc.stats["in_msgs"]
        turned: list[int] = []
        asyncio.get_running_loop().call_soon(turned.append, 1)
        assert await a.run("n2", call, deadline, lambda err: False, fresh=True) == (result("new"), "called")
        assert await a.run("n2", call, deadline, lambda err: False) == (result("new"), "replayed")
    assert answers_before_call == [1, 0]
    assert loop_turns[-1] == 0  # the fresh call started before the loop turned once


async def test_a_fresh_call_made_before_after_all_is_replayed_and_its_request_cancelled(bus: Bus) -> None:
    """A caller's first attempt that is not (its job published again after a long stall): the provider request
    started alongside the claim is cancelled once the claim finds the stored result, which is returned."""
    deadline = time.monotonic() + 30
    cancelled = asyncio.Event()

    async def first() -> CompletionResult:
        return result("stored")

    async def again() -> CompletionResult:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return result("again")

    async with copy(bus, "router-a") as a:
        assert await a.run("f1", first, deadline, lambda err: False, fresh=True) == (result("stored"), "called")
        assert await a.run("f1", again, deadline, lambda err: False, fresh=True) == (result("stored"), "replayed")
    assert cancelled.is_set()


async def test_a_call_sent_again_only_after_a_silence_is_claimed_once_it_has_run_part_of_it(bus: Bus) -> None:
    """A request its client sends again only after seconds of silence cannot have another attempt before it
    has run about half that: a shorter call makes one bucket write, its result (still replayed to a repeat),
    and a longer one is claimed on time, so a repeat on another copy joins it."""
    deadline = time.monotonic() + 30
    never = lambda err: False  # noqa: E731
    calls: list[str] = []
    started, release = asyncio.Event(), asyncio.Event()

    async def short() -> CompletionResult:
        calls.append("short")
        return result("short")

    async def slow() -> CompletionResult:
        calls.append("slow")
        started.set()
        await release.wait()
        return result("slow")

    kv = await bus.kv(KV_LLM_RESULTS, ttl=60)

    async def writes() -> int:
        return (await bus.js.stream_info(kv._stream)).state.last_seq

    async with copy(bus, "router-a") as a, copy(bus, "router-b") as b:
        before = await writes()
        assert await a.run("l1", short, deadline, never, fresh=True, claim_after_s=0.3) == (result("short"), "called")
        assert await writes() - before == 1
        assert await b.run("l1", short, deadline, never) == (result("short"), "replayed")

        running = asyncio.create_task(a.run("l2", slow, deadline, never, fresh=True, claim_after_s=0.3))
        await asyncio.wait_for(started.wait(), 5)
        await asyncio.sleep(0.6)
        joiner = asyncio.create_task(b.run("l2", short, deadline, never))
        await asyncio.sleep(0.5)
        assert not joiner.done()
        release.set()
        assert await running == (result("slow"), "called")
        assert await joiner == (result("slow"), "joined")
    assert calls == ["short", "slow"]


async def test_another_copys_running_call_is_joined_and_a_dead_copys_is_taken_over(bus: Bus) -> None:
    """Across copies: a repeat on copy B of a call copy A runs waits for A's result; a claim left by a copy
    that is gone (nobody answers for it) is taken over at once."""
    deadline = time.monotonic() + 30
    never = lambda err: False  # noqa: E731
    calls: list[str] = []
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> CompletionResult:
        calls.append("a")
        started.set()
        await release.wait()
        return result("from A")

    async def fast() -> CompletionResult:
        calls.append("b")
        return result("from B")

    async with copy(bus, "router-a") as a, copy(bus, "router-b") as b:
        running = asyncio.create_task(a.run("k1", slow, deadline, never))
        await asyncio.wait_for(started.wait(), 5)
        joiner = asyncio.create_task(b.run("k1", fast, deadline, never))
        await asyncio.sleep(0.5)
        assert not joiner.done()
        release.set()
        assert await running == (result("from A"), "called")
        assert await joiner == (result("from A"), "joined")
        assert calls == ["a"]

        # a claim whose owner is gone
        kv = await bus.kv(KV_LLM_RESULTS)
        await kv.put(kv_key("k2"), StoredCall(call_key="k2", state="running", owner="gone").model_dump_json().encode())
        t0 = time.monotonic()
        assert await b.run("k2", fast, deadline, never) == (result("from B"), "called")
        assert time.monotonic() - t0 < 2.0
        stored = StoredCall.model_validate_json((await kv.get(kv_key("k2"))).value or b"")
        assert stored.state == "done" and stored.owner == "router-b"


async def test_a_streamed_call_stops_when_its_caller_dies(nats_url: str, prefix: str, bus: Bus) -> None:
    """The caller's process dies mid-answer (its connection closes): the router cancels the provider
    request within a couple of seconds and charges only what streamed."""
    words = " ".join(f"w{i}" for i in range(100))
    async with (
        FakeProvider(timing=Timing(token_interval_s=0.1, text=words)) as fake,
        router(nats_url, prefix, {"fake": provider(fake, timeout_s=30)}) as app,
    ):
        assert app.router is not None
        caller = await Bus.connect(nats_url, prefix=prefix, name="caller", instance="caller")
        first = asyncio.Event()

        async def on_chunk(_: CompletionChunk) -> None:
            first.set()

        call = asyncio.create_task(LLMClient(caller).complete(req(request_id="orphan-1"), on_chunk))
        await asyncio.wait_for(first.wait(), 5)
        await caller.nc.close()  # what the server sees when a process is killed
        died = time.monotonic()
        while app.router.inflight.by_request:
            assert time.monotonic() - died < 3.5, "the call ran on after its caller died"
            await asyncio.sleep(0.05)
        stopped_s = time.monotonic() - died
        call.cancel()
        with contextlib.suppress(BaseException):
            await call
        await asyncio.sleep(0.3)
        recs = [r for r in await usage_records(bus) if r.request_id == "orphan-1"]
        orphaned = app.rt.metrics.registry.get_sample_value("adp_router_orphaned_total")
    print(f"call stopped {stopped_s:.2f} s after its caller died")
    assert fake.stats.completed == 0 and orphaned == 1
    assert len(recs) == 1 and recs[0].status == "error" and 0 < recs[0].output_tokens < 100


async def test_a_streamed_call_stops_when_its_caller_stops_answering(nats_url: str, prefix: str, bus: Bus) -> None:
    """A caller still connected but not answering the keepalives (hung) misses its liveness deadline."""
    words = " ".join(f"w{i}" for i in range(100))
    async with (
        FakeProvider(timing=Timing(token_interval_s=0.05, text=words)) as fake,
        router(
            nats_url,
            prefix,
            {"fake": provider(fake, timeout_s=30)},
            router_keepalive_s=0.3,
            router_caller_deadline_s=1.0,
        ) as app,
    ):
        assert app.router is not None
        # a caller that listens to its stream but never answers
        sub = await bus.nc.subscribe(bus.catalog.llm_stream("hung-1"))
        call = asyncio.create_task(bus.request(bus.catalog.llm_complete, req(request_id="hung-1", stream=True)))
        t0 = time.monotonic()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(call, 4)
        assert time.monotonic() - t0 < 2.5
        assert fake.stats.completed == 0
        await sub.unsubscribe()


async def test_a_caller_moving_to_another_server_keeps_its_call(nats_url: str, prefix: str, bus: Bus) -> None:
    """A caller's stream subscription is gone for a moment (its connection moves to another NATS server): the
    keepalive that finds nobody listening is asked again before the call counts as orphaned, and it goes on."""
    words = " ".join(f"w{i}" for i in range(60))
    async with (
        FakeProvider(timing=Timing(token_interval_s=0.03, text=words)) as fake,
        router(nats_url, prefix, {"fake": provider(fake, timeout_s=30)}, router_keepalive_s=0.3) as app,
    ):
        subject = bus.catalog.llm_stream("moving-1")

        async def answer(msg: Any) -> None:
            if msg.reply:
                await msg.respond(b"")

        sub = await bus.nc.subscribe(subject, cb=answer)
        call = asyncio.create_task(
            bus.request(bus.catalog.llm_complete, req(request_id="moving-1", stream=True), timeout=15)
        )
        await asyncio.sleep(0.4)
        await sub.unsubscribe()  # away for longer than a keepalive period, shorter than the second question
        await bus.nc.flush()
        await asyncio.sleep(0.6)
        sub = await bus.nc.subscribe(subject, cb=answer)
        await bus.nc.flush()
        reply = await asyncio.wait_for(call, 15)
        await sub.unsubscribe()
        orphaned = app.rt.metrics.registry.get_sample_value("adp_router_orphaned_total") or 0
    assert fake.stats.completed == 1 and orphaned == 0
    assert reply["text"] == words
