"""The OpenAI-compatible API (/v1): models and chat completions, streamed or not."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.llm import CancelCalls, CompletionChunk, CompletionRequest, CompletionResult, ModelList
from adp_gateway import openai_compat as oai
from adp_gateway.context import GatewayContext
from adp_gateway.deps import Ctx, Limited, User
from adp_gateway.errors import error_responses
from adp_gateway.events import EventStreamResponse
from adp_gateway.sessions import Session

router = APIRouter(tags=["openai"])


@router.get("/v1/models")
async def models(ctx: Ctx, p: User) -> JSONResponse:
    result = await ctx.request(ctx.bus.catalog.llm_models, None, ModelList)
    return JSONResponse(oai.models_response(result))


@router.post("/v1/chat/completions", response_model=None, responses=error_responses(402, 404, 502, 504))
async def chat_completions(body: oai.ChatCompletionRequest, ctx: Ctx, p: Limited) -> Response:
    oai.check_supported(body)
    req = oai.to_completion_request(
        body, user_id=p.user_id, key_id=p.key_id, timeout_s=ctx.settings.completion_timeout_s
    )
    try:
        if not body.stream:
            result = await ctx.llm.complete(req)
            return JSONResponse(oai.completion_response(result, model=body.model))
        return await _stream_completion(ctx, req, body)
    except PlatformError as err:
        if err.code == ErrorCode.MODEL_NOT_FOUND:
            raise oai.model_not_found(body.model) from None
        raise


async def _stream_completion(ctx: GatewayContext, req: CompletionRequest, body: oai.ChatCompletionRequest) -> Response:
    """Start the call; answer with a plain error if it fails before the first token, else stream chunks."""
    # One queue carries the chunks, then None once the call has ended (its result or error is then on the task):
    # a chunk costs one wake-up of the response's body, and no future or wait per chunk.
    queue: asyncio.Queue[CompletionChunk | None] = asyncio.Queue()

    async def on_chunk(c: CompletionChunk) -> None:
        queue.put_nowait(c)

    task = asyncio.create_task(ctx.llm.complete(req, on_chunk=on_chunk))
    task.add_done_callback(lambda _: queue.put_nowait(None))
    try:
        first = await queue.get()
    except asyncio.CancelledError:
        task.cancel()
        raise
    if first is None and not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        if isinstance(exc, PlatformError):
            raise exc
        raise PlatformError(ErrorCode.LLM_PROVIDER_ERROR, "completion failed")
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    model = (first.model if first is not None else None) or body.model
    enc = oai.StreamEncoder(req.request_id, model=model, include_usage=include_usage)
    # a client that goes away cancels the call, here and (CancelCalls by request id) at the router
    return EventStreamResponse(
        _completion_frames(ctx, req, enc, task, queue, first), task.cancel, headers={"Cache-Control": "no-cache"}
    )


async def _completion_frames(
    ctx: GatewayContext,
    req: CompletionRequest,
    enc: oai.StreamEncoder,
    task: asyncio.Task[CompletionResult],
    queue: asyncio.Queue[CompletionChunk | None],
    first: CompletionChunk | None,
) -> AsyncIterator[bytes]:
    ctx.metrics.streams.labels("openai").inc()

    # revoking the key (or disabling its user) ends the stream like a client going away
    def end() -> None:
        task.cancel()

    session = ctx.sessions.add(Session("sse", req.user_id or "", req.key_id, end))
    try:
        frames = enc.start()
        chunk = first
        while chunk is not None:
            batch, ended = _ready(queue, chunk)  # every chunk already waiting leaves in one write
            frames += enc.chunks(batch)
            if ended:
                break
            yield frames
            frames = b""
            chunk = await queue.get()
        # the call has ended: its last chunks and its end leave together
        if task.cancelled():  # the client went away (EventStreamResponse cancelled the call here)
            # and the router stops it too: the provider stops generating, and only what streamed is charged
            cancel = CancelCalls(request_id=req.request_id, reason="client disconnected")
            await ctx.bus.notify(ctx.bus.catalog.llm_cancel, cancel)
            return
        try:
            result = task.result()
        except PlatformError as err:
            yield frames + enc.error(err.code.value, err.message)
            return
        except Exception:
            yield frames + enc.error(ErrorCode.INTERNAL_ERROR.value, "completion failed")
            return
        yield frames + enc.finish(result)
    finally:
        ctx.sessions.remove(session)
        ctx.metrics.streams.labels("openai").dec()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _ready(queue: asyncio.Queue[CompletionChunk | None], chunk: CompletionChunk) -> tuple[list[CompletionChunk], bool]:
    """`chunk` and the chunks queued behind it; True when the end of the call (None) was among them."""
    batch = [chunk]
    while not queue.empty():
        nxt = queue.get_nowait()
        if nxt is None:
            return batch, True
        batch.append(nxt)
    return batch, False
