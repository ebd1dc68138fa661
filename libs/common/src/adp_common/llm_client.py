"""Client side of the llm-router protocol, shared by the dialogue service and the gateway.

Protocol: the caller subscribes to `Catalog.llm_stream(request_id)` (core NATS), then sends the
CompletionRequest to `Catalog.llm_complete`. The router publishes CompletionChunk messages there as
tokens arrive (streaming calls), plus a keepalive every couple of seconds while the call runs (every
call; to a streaming caller it is a question the client answers, and a caller that is gone has its call
cancelled), and replies with the CompletionResult (or an error reply carrying LLM_PROVIDER_ERROR,
LLM_TIMEOUT, NO_LLM_PROVIDER_AVAILABLE or BUDGET_EXCEEDED) when the call ends.

A router copy that dies mid-call stops sending keepalives: after `idle_timeout_s` of silence the
client gives up on it and sends the same request (same request_id, so the usage record is never
duplicated, and the same call_key, so a copy that was only slow to be heard is joined rather than the
provider called again) to another copy. If text had already been delivered, the first chunk of the new
attempt carries `restart=True` so the receiver discards its partial text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from adp_common.bus import Bus
from adp_common.errors import ErrorCode, PlatformError
from adp_common.retry import Backoff
from adp_common.schemas.llm import CompletionChunk, CompletionRequest, CompletionResult

log = logging.getLogger("adp.llm_client")
# Pauses while no router copy is subscribed (one restarting): 0.5 s, then 1 s.
ROUTER_UNAVAILABLE_RETRY = Backoff(initial_s=0.5, max_s=1.0)

ChunkCallback = Callable[[CompletionChunk], Awaitable[None]]


class _RouterLost(Exception):
    pass


class _Attempt:
    """One attempt in flight, as the shared watchdog sees it."""

    __slots__ = ("last_seen", "lost", "request")

    def __init__(self) -> None:
        self.last_seen = time.monotonic()
        self.lost = False
        self.request: asyncio.Task[CompletionResult] | None = None


def _cancel_requested() -> bool:
    """Whether someone cancelled the running task (rather than the watchdog its request). A function, not a
    local in the except block: the cancelled task keeps the CancelledError, whose traceback holds that frame,
    and a local holding the task would make a cycle of them."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class LLMClient:
    def __init__(
        self, bus: Bus, *, chunk_buffer: int = 4096, idle_timeout_s: float = 6.0, router_attempts: int = 3
    ) -> None:
        self.bus = bus
        self.chunk_buffer = chunk_buffer
        self.idle_timeout_s = idle_timeout_s
        self.router_attempts = router_attempts
        self._attempts: set[_Attempt] = set()
        self._answers: list[str] = []  # reply subjects of the router's keepalive questions, answered together
        self._answering: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None

    async def complete(self, req: CompletionRequest, on_chunk: ChunkCallback | None = None) -> CompletionResult:
        """Run one completion. With `on_chunk`, chunks are delivered in order while the call runs; the
        returned result always has the full text. Errors raise PlatformError with the router's code."""
        relayed = req.relay_subject is not None
        # A call re-sent to another router copy is the same logical call: the router joins the running call or
        # replays its result instead of calling the provider again (adp_router.calls).
        update: dict[str, object] = {"stream": on_chunk is not None or relayed}
        if req.call_key is None:
            # Sent again only after `idle_timeout_s` of silence: until the call has run about half that, no
            # other attempt can exist, so the router need not claim it before.
            update.update(call_key=f"request:{req.request_id}", fresh=True, claim_after_s=self.idle_timeout_s / 2)
        req = req.model_copy(update=update)
        deadline = time.monotonic() + req.timeout_s + 5
        delivered = False
        for attempt in range(1, self.router_attempts + 1):
            try:
                if attempt > 1:
                    # the call may be running: a re-sent one is never fresh. Relayed chunks went straight to
                    # the listeners; tell them a re-sent answer starts over
                    req = req.model_copy(update={"fresh": False, "claim_after_s": None, "relay_restart": relayed})
                return await self._attempt(req, on_chunk, deadline, restart=delivered)
            except _RouterLost as lost:
                delivered = delivered or bool(lost.args and lost.args[0])
                if attempt == self.router_attempts or time.monotonic() >= deadline:
                    raise PlatformError(
                        ErrorCode.NO_LLM_PROVIDER_AVAILABLE, "llm-router stopped answering (no live copy)"
                    ) from None
                log.warning("llm-router copy lost during %s; retrying on another copy", req.request_id)
            except PlatformError as err:
                if err.code != ErrorCode.SERVICE_UNAVAILABLE:
                    raise
                # No router copy subscribed right now (restarting?): wait a little, then try again.
                if attempt == self.router_attempts or time.monotonic() + 1 >= deadline:
                    raise PlatformError(
                        ErrorCode.NO_LLM_PROVIDER_AVAILABLE, f"llm-router unavailable: {err.message}"
                    ) from None
                await asyncio.sleep(ROUTER_UNAVAILABLE_RETRY.pause(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(
        self, req: CompletionRequest, on_chunk: ChunkCallback | None, deadline: float, *, restart: bool
    ) -> CompletionResult:
        queue: asyncio.Queue[CompletionChunk | None] = asyncio.Queue(self.chunk_buffer)
        watched = _Attempt()

        def on_msg(msg: Msg) -> None:
            watched.last_seen = time.monotonic()
            if msg.reply:  # the router asks whether this caller is still there (see adp_router.callers)
                self._answer(msg.reply)
            if on_chunk is None:
                return
            chunk = CompletionChunk.model_validate_json(msg.data)
            if chunk.keepalive:
                return
            with contextlib.suppress(asyncio.QueueFull):
                # A consumer that falls this far behind still gets the whole text in the result.
                queue.put_nowait(chunk)

        # No flush round trip before the request: SUB and the request leave on the same connection in
        # order, so the server has the subscription before any router copy can see the request. Inline: a
        # keepalive costs no task wake-up, and a call no subscription task.
        sub = await self.bus.subscribe_inline(self.bus.catalog.llm_stream(req.request_id), on_msg, flush=False)
        delivered = [False]
        pumper = asyncio.create_task(_pump(queue, on_chunk, restart, delivered)) if on_chunk is not None else None
        # The shared watchdog gives up on a silent router copy; the call itself is awaited directly.
        request: asyncio.Task[CompletionResult] | None = None
        try:
            # The request is on the connection when start_request returns (right behind the SUB), so what
            # the caller queued before this call — a turn's message-start — leaves in the same socket write.
            request = await self.bus.start_request(
                self.bus.catalog.llm_complete,
                req,
                timeout=max(0.1, deadline - time.monotonic()),
                response_model=CompletionResult,
            )
            watched.request = request
            self._watch(watched)
            try:
                result = await request
            except asyncio.CancelledError:
                if watched.lost and not _cancel_requested():
                    raise _RouterLost(delivered[0]) from None
                raise
            if pumper is not None:
                await self._drain(sub, queue, pumper)
            return result
        finally:
            self._attempts.discard(watched)
            if request is not None and not request.done():
                request.cancel()
            if pumper is not None and not pumper.done():
                pumper.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pumper
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _answer(self, reply: str) -> None:
        """Answer a keepalive question. The router asks about every running call on one clock, so questions
        come in bursts: one task answers all that arrived together (a task per answer cost a busy caller
        hundreds of tasks a second)."""
        self._answers.append(reply)
        if self._answering is None:
            self._answering = asyncio.ensure_future(self._send_answers())

    async def _send_answers(self) -> None:
        try:
            while self._answers:
                replies, self._answers = self._answers, []
                for reply in replies:
                    with contextlib.suppress(Exception):
                        await self.bus.nc.publish(reply, b"")
        finally:
            self._answering = None

    async def _drain(
        self, sub: Subscription, queue: asyncio.Queue[CompletionChunk | None], pumper: asyncio.Task[None]
    ) -> None:
        """Deliver every chunk of an answered call. Chunks published before the reply were sent before it, on
        the same connection. With inline handlers they were queued when the reply was read, so the queue holds
        them all already; otherwise a flush round trip guarantees they reached this client, then wait until
        the subscription has handed them all over. Then the pump passes them on."""
        if not self.bus.inline_in_order:
            await self.bus.nc.flush(timeout=2)
            for _ in range(2000):  # at most ~2 s
                if sub.pending_msgs == 0:
                    break
                await asyncio.sleep(0.001)
            await asyncio.sleep(0)
        await queue.put(None)
        await asyncio.wait_for(pumper, timeout=10)

    def _watch(self, attempt: _Attempt) -> None:
        self._attempts.add(attempt)
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._watch_loop())

    async def _watch_loop(self) -> None:
        """One clock for every attempt in flight (a timer per call woke the loop once a second per call):
        an attempt whose router copy has been silent for `idle_timeout_s` is cancelled as lost."""
        try:
            while self._attempts:
                await asyncio.sleep(1.0)
                now = time.monotonic()
                for a in list(self._attempts):
                    if a.request is not None and not a.request.done() and now - a.last_seen > self.idle_timeout_s:
                        a.lost = True
                        a.request.cancel()
        finally:
            self._watchdog = None


async def _pump(
    queue: asyncio.Queue[CompletionChunk | None], on_chunk: ChunkCallback, restart: bool, delivered: list[bool]
) -> None:
    """Hand queued chunks to `on_chunk` in order until None: duplicates skipped, the first marked `restart`
    when this attempt re-sends an answer; `delivered[0]` set once one went out."""
    next_seq = 0
    first = True
    while True:
        chunk = await queue.get()
        if chunk is None:
            return
        if chunk.seq < next_seq and not chunk.restart:
            continue  # duplicate
        next_seq = chunk.seq + 1
        if first and restart:
            chunk = chunk.model_copy(update={"restart": True})
        first = False
        await on_chunk(chunk)
        delivered[0] = True
