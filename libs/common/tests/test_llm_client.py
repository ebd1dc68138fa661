"""LLMClient against real NATS with a stand-in router: a copy that falls silent is given up after the idle
timeout and the same request goes to another copy; a caller's cancel is not mistaken for a lost copy; every
chunk published before the reply reaches the caller before the call returns."""

from __future__ import annotations

import asyncio
import time

import pytest

from adp_common.bus import Bus, RequestContext
from adp_common.llm_client import LLMClient
from adp_common.schemas.llm import ChatMessage, CompletionChunk, CompletionRequest, CompletionResult


def request() -> CompletionRequest:
    return CompletionRequest(messages=[ChatMessage(role="user", content="hi")], timeout_s=30)


async def test_silent_router_copy_is_given_up_and_the_request_resent(bus: Bus, nats_url: str, prefix: str) -> None:
    router = await Bus.connect(nats_url, prefix=prefix, name="llm-router")
    seen: list[str] = []
    try:

        async def complete(req: CompletionRequest, _: RequestContext) -> CompletionResult:
            seen.append(req.request_id)
            if len(seen) == 1:
                await asyncio.sleep(30)  # the first copy hangs and sends no keepalive
            return CompletionResult(request_id=req.request_id, text="ok", provider="p", model="m")

        await router.serve(router.catalog.llm_complete, complete, CompletionRequest)
        client = LLMClient(bus, idle_timeout_s=1.0, router_attempts=2)
        t0 = time.perf_counter()
        result = await asyncio.wait_for(client.complete(request()), 10)
        elapsed = time.perf_counter() - t0
    finally:
        await router.close(grace=0.5)
    assert result.text == "ok"
    assert len(seen) == 2 and seen[0] == seen[1]  # the same request id: its usage is recorded once
    assert 1.0 <= elapsed < 4.0


async def test_cancelling_the_caller_is_not_a_lost_router(bus: Bus, nats_url: str, prefix: str) -> None:
    router = await Bus.connect(nats_url, prefix=prefix, name="llm-router")
    calls = 0
    try:

        async def complete(req: CompletionRequest, _: RequestContext) -> CompletionResult:
            nonlocal calls
            calls += 1
            await asyncio.sleep(30)
            raise AssertionError("unreachable")

        await router.serve(router.catalog.llm_complete, complete, CompletionRequest)
        client = LLMClient(bus, idle_timeout_s=0.5, router_attempts=3)
        task = asyncio.create_task(client.complete(request()))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(1.0)  # a watchdog left behind would resend here
    finally:
        await router.close(grace=0.5)
    assert calls == 1


async def test_every_chunk_sent_just_before_the_reply_is_delivered_first(bus: Bus, nats_url: str, prefix: str) -> None:
    router = await Bus.connect(nats_url, prefix=prefix, name="llm-router")
    texts = [f"token {i} " + "x" * (i % 7) * 50 for i in range(400)]  # several socket reads' worth
    try:

        async def complete(req: CompletionRequest, _: RequestContext) -> CompletionResult:
            subject = router.catalog.llm_stream(req.request_id)
            for i, text in enumerate(texts):  # no pause: the reply leaves right behind the last chunk
                await router.publish(subject, CompletionChunk(request_id=req.request_id, seq=i, delta=text))
            return CompletionResult(request_id=req.request_id, text="".join(texts), provider="p", model="m")

        await router.serve(router.catalog.llm_complete, complete, CompletionRequest)
        client = LLMClient(bus)
        for _ in range(5):
            got: list[str] = []

            async def on_chunk(c: CompletionChunk, got: list[str] = got) -> None:
                got.append(c.delta)

            result = await asyncio.wait_for(client.complete(request(), on_chunk), 10)
            assert got == texts and result.text == "".join(texts)
    finally:
        await router.close(grace=0.5)
