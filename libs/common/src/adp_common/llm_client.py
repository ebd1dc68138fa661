"""Client side of the llm-router protocol, shared by the dialogue service and the gateway.

Protocol: the caller subscribes to `Catalog.llm_stream(request_id)` (core NATS), then sends the
CompletionRequest to `Catalog.llm_complete`. The router publishes CompletionChunk messages there as
tokens arrive and replies with the CompletionResult (or an error reply carrying LLM_PROVIDER_ERROR,
LLM_TIMEOUT, NO_LLM_PROVIDER_AVAILABLE or BUDGET_EXCEEDED) when the call ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from adp_common.bus import Bus
from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.llm import CompletionChunk, CompletionRequest, CompletionResult

ChunkCallback = Callable[[CompletionChunk], Awaitable[None]]


class LLMClient:
    def __init__(self, bus: Bus, *, chunk_buffer: int = 1024) -> None:
        self.bus = bus
        self.chunk_buffer = chunk_buffer

    async def complete(self, req: CompletionRequest, on_chunk: ChunkCallback | None = None) -> CompletionResult:
        """Run one completion. With `on_chunk`, chunks are delivered in order while the call runs; the
        returned result always has the full text. Errors raise PlatformError with the router's code."""
        if on_chunk is None:
            req = req.model_copy(update={"stream": False})
            return await self._request(req)
        req = req.model_copy(update={"stream": True})
        queue: asyncio.Queue[CompletionChunk | None] = asyncio.Queue(self.chunk_buffer)

        async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
            chunk = CompletionChunk.model_validate_json(msg.data)
            try:
                queue.put_nowait(chunk)
            except asyncio.QueueFull:
                # The consumer is too slow; the final result still carries the whole text.
                pass

        sub = await self.bus.nc.subscribe(self.bus.catalog.llm_stream(req.request_id), cb=on_msg)

        async def pump() -> None:
            next_seq = 0
            while True:
                chunk = await queue.get()
                if chunk is None:
                    return
                if chunk.seq < next_seq and not chunk.restart:
                    continue  # duplicate from a retried request
                next_seq = chunk.seq + 1
                await on_chunk(chunk)

        pumper = asyncio.create_task(pump())
        try:
            result = await self._request(req)
            # Chunks published before the reply are already in our socket buffer; let them land.
            await self.bus.nc.flush(timeout=2)
            await asyncio.sleep(0)
            queue.put_nowait(None) if not queue.full() else await queue.put(None)
            await asyncio.wait_for(pumper, timeout=10)
            return result
        finally:
            if not pumper.done():
                pumper.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pumper
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _request(self, req: CompletionRequest) -> CompletionResult:
        try:
            return await self.bus.request(
                self.bus.catalog.llm_complete, req, timeout=req.timeout_s + 5, response_model=CompletionResult
            )
        except PlatformError as err:
            if err.code == ErrorCode.SERVICE_UNAVAILABLE:
                raise PlatformError(
                    ErrorCode.NO_LLM_PROVIDER_AVAILABLE, f"llm-router unavailable: {err.message}"
                ) from None
            raise
