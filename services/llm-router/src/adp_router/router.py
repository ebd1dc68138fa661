"""The routing engine: budget gate, fallback chain, breakers, retries, streaming, usage records.

Hot path per streamed token: one string format and one core-NATS publish (buffered by the client)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import orjson
from nats.aio.client import Client as NATS

from adp_common.bus import Bus, send_now
from adp_common.errors import ErrorCode, PlatformError
from adp_common.logging import log_slow
from adp_common.retry import Backoff
from adp_common.schemas.llm import CompletionRequest, CompletionResult, Usage, UsageRecord
from adp_router import spans
from adp_router.breaker import BreakerBoard
from adp_router.budget import BudgetGate
from adp_router.calls import OnceCalls
from adp_router.config import RouteEntry, RouterConfig
from adp_router.health import HealthBoard
from adp_router.metrics import RouterMetrics
from adp_router.providers import CallState, Provider, ProviderError
from adp_router.settings import RouterSettings
from adp_router.simulated_text import estimate_tokens

log = logging.getLogger("adp.router")
USAGE_PUBLISH_RETRY = Backoff(initial_s=0.2, max_s=0.4, attempts=3)  # a usage record is what charges a call


class FlushTicker:
    """One clock for every coalescing `ChunkEmitter` of this copy. Each stream gets a tick once per period:
    - the tick flushes the stream's emitter if it holds tokens (`add`); the emitters of one tick leave in one
      loop iteration — one NATS socket write — instead of one timer, task and write per stream and interval;
    - it wakes the stream's reader if it is paced (`next_tick`): one read then takes every token that
      arrived meanwhile, so the per-token work in the router (task wake-up, parsing layers) happens once
      per tick.
    Streams are dealt round-robin over `slots` ticks spread evenly across the period, so a period's work
    comes in small bursts (a first token arriving meanwhile waits for one slot, not for every stream).
    `period()` is read at every tick (it grows with the load, see `chunk_interval_s`). Ticks never come
    closer than `min_tick_s`: when the period is short (little load) one wake-up serves several slots, so
    many slots — small bursts under load — cost no extra wake-ups when the copy is nearly idle."""

    def __init__(self, period: Callable[[], float], slots: int = 8, min_tick_s: float = 0.0025) -> None:
        self.period = period
        self.slots = slots
        self.min_tick_s = min_tick_s
        self.waiting: list[dict[ChunkEmitter, None]] = [{} for _ in range(slots)]  # insertion-ordered sets
        self._ticks = [asyncio.Event() for _ in range(slots)]
        self._sleepers = 0
        self._dealt = 0
        self._current = 0
        self._task: asyncio.Task[None] | None = None

    def deal(self) -> int:
        """The slot of a new stream."""
        self._dealt = (self._dealt + 1) % self.slots
        return self._dealt

    def add(self, emitter: ChunkEmitter) -> None:
        self.waiting[emitter.slot][emitter] = None
        self._ensure_running()

    def remove(self, emitter: ChunkEmitter) -> None:
        self.waiting[emitter.slot].pop(emitter, None)

    async def next_tick(self, slot: int) -> None:
        tick = self._ticks[slot]
        self._sleepers += 1
        self._ensure_running()
        try:
            await tick.wait()
        finally:
            self._sleepers -= 1

    def _ensure_running(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._sleepers or any(self.waiting):
                tick_s = self.period() / self.slots
                group = min(self.slots, math.ceil(self.min_tick_s / tick_s)) if tick_s > 0 else self.slots
                await asyncio.sleep(tick_s * group)
                for _ in range(group):
                    await self._tick()
        finally:
            self._task = None

    async def _tick(self) -> None:
        k = self._current = (self._current + 1) % self.slots
        tick, self._ticks[k] = self._ticks[k], asyncio.Event()
        tick.set()
        batch, self.waiting[k] = self.waiting[k], {}
        for emitter in batch:
            try:
                await emitter.flush()
            except Exception:  # one stream's failed publish must not stop the others' chunks
                log.exception("chunk flush of %s failed", emitter.request_id)


class ChunkEmitter:
    """Publishes CompletionChunk JSON on the request's stream subject.

    Tokens are coalesced: the first is sent at once (time to first token), later ones wait for the next
    tick of the shared `FlushTicker` and leave together in one message, which cuts NATS messages and socket
    writes several-fold at typical token rates with no visible delay. Without a ticker every token is its
    own message. `seq` counts tokens accepted; published messages carry their own
    monotonic sequence (from 0, continued across a restart on another provider; the first message after a
    restart carries restart=true)."""

    __slots__ = (
        "_buf",
        "_head",
        "msg_seq",
        "nc",
        "relay_template",
        "request_id",
        "restart",
        "seq",
        "slot",
        "subject",
        "ticker",
    )

    def __init__(
        self,
        nc: NATS,
        subject: str,
        request_id: str,
        ticker: FlushTicker | None = None,
        relay_template: dict[str, Any] | None = None,
    ) -> None:
        self.nc = nc
        self.relay_template = relay_template
        self.subject = subject
        self.request_id = request_id
        self.ticker = ticker
        self.slot = ticker.deal() if ticker is not None else 0
        self.seq = 0
        self.msg_seq = 0
        self.restart = False
        self._head = ""
        self._buf: list[str] = []

    def set_provider(self, provider: str, model: str) -> None:
        self._head = (
            f'{{"request_id":{json.dumps(self.request_id)},"provider":{json.dumps(provider)},'
            f'"model":{json.dumps(model)},"seq":'
        )

    async def emit(self, delta: str) -> None:
        self.seq += 1
        self._buf.append(delta)
        if self.ticker is None or self.msg_seq == 0:
            await self.flush()
        elif len(self._buf) == 1:
            self.ticker.add(self)

    async def pace(self, transport: asyncio.Transport | None = None) -> None:
        """Awaited by a provider adapter before it reads more of the streamed body (`CallState.pace`): sends
        the tokens read so far, then holds the next read until the next tick. Until the first token has gone
        out, reads are not held (time to first token).

        The body's `transport`, when given, stops reading from its socket meanwhile: the provider's tokens
        wait in the kernel's buffer and the next read takes them in one system call, instead of the event
        loop reading and the HTTP parser handling every token as it arrives (one read per token)."""
        if self.ticker is None or self.msg_seq == 0:
            return
        await self.flush()
        held = transport if transport is not None and transport.is_reading() else None
        if held is not None:
            held.pause_reading()
        try:
            await self.ticker.next_tick(self.slot)
        finally:
            if held is not None and not held.is_closing():
                held.resume_reading()

    def discard(self) -> None:
        """Drop tokens not yet sent (the answer restarts elsewhere) and mark the next message as a restart."""
        if self.ticker is not None:
            self.ticker.remove(self)
        self._buf.clear()
        self.restart = True

    async def flush(self) -> None:
        if not self._buf:
            return
        if self.ticker is not None:
            self.ticker.remove(self)
        delta = "".join(self._buf)
        self._buf.clear()
        restart = self.restart
        self.restart = False
        self.msg_seq += 1
        if self.relay_template is not None:
            # Straight to the final listeners, in their own format (see CompletionRequest.relay_template).
            data = dict(self.relay_template.get("data") or {})
            data["chunk"] = delta
            if restart:
                data["restart"] = True
            await self.nc.publish(self.subject, orjson.dumps({**self.relay_template, "data": data}))
        else:
            flag = "true" if restart else "false"
            head = f'{self._head}{self.msg_seq - 1},"restart":{flag},"delta":'.encode()
            await self.nc.publish(self.subject, head + orjson.dumps(delta) + b"}")
        if self.msg_seq == 1:
            send_now(self.nc)  # the first token (time to first chunk); the ticker's chunks share a write


@dataclass
class Track:
    """What the usage record of one call reports (the last attempted provider when it fails)."""

    provider: str = "none"
    model: str = "none"
    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False
    ttft_ms: float | None = None
    attempts: int = 0


def chunk_interval_s(
    streams: int,
    base_ms: float,
    max_ms: float,
    busy_streams: int,
    lag_ms: float = 0.0,
    overload_lag_ms: float = 0.0,
    overload_max_ms: float = 0.0,
) -> float:
    """Coalescing window (the flush tick): `base_ms` while this copy carries at most `busy_streams`
    streams, then growing with the load up to `max_ms`. Under load, fewer and larger chunks keep the
    per-message cost downstream (NATS, gateway, clients) from growing with every token; one user alone
    still sees tokens within `base_ms`. The first token is never held back.

    When the copy's event loop lags by more than `overload_lag_ms` (the machine is short of CPU, whatever the
    stream count), the window grows further in proportion to the lag, up to `overload_max_ms`: the text
    arrives in coarser pieces so that first tokens and requests, which wait in the same queues, do not."""
    if streams <= busy_streams or max_ms <= base_ms:
        ms = base_ms
    else:
        ms = min(max_ms, base_ms * streams / busy_streams)
    if 0 < overload_lag_ms < lag_ms and overload_max_ms > ms:
        ms = min(overload_max_ms, ms * lag_ms / overload_lag_ms)
    return ms / 1000


def backoff(attempt: int, initial: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform in [0.5, 1] x min(cap, initial * 2^(attempt-1))."""
    return Backoff(initial_s=initial, max_s=cap, jitter=True).pause(attempt)


class Router:
    def __init__(
        self,
        settings: RouterSettings,
        config: RouterConfig,
        providers: dict[str, Provider],
        *,
        bus: Bus,
        breakers: BreakerBoard,
        budget: BudgetGate,
        health: HealthBoard,
        metrics: RouterMetrics,
        loop_lag_s: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.settings = settings
        self.config = config
        self.providers = providers
        self.bus = bus
        self.breakers = breakers
        self.budget = budget
        self.health = health
        self.metrics = metrics
        self.streams = 0  # streamed calls in flight on this copy (sets the chunk interval)
        # in-flight calls by discussion and by request id, and why each one cancelled by `_cancel` was
        self.calls: dict[str, set[asyncio.Task[Any]]] = {}
        self.calls_by_request: dict[str, asyncio.Task[Any]] = {}
        self._cancelled: dict[asyncio.Task[Any], str] = {}
        self.once: OnceCalls | None = None  # logical calls' results, when the router runs with its bucket
        self.orphaned: set[str] = set()  # request ids cancelled because their caller was gone
        s = settings

        def interval() -> float:
            return chunk_interval_s(
                self.streams,
                s.router_chunk_interval_ms,
                s.router_chunk_interval_max_ms,
                s.router_busy_streams,
                loop_lag_s() * 1000,
                s.router_overload_lag_ms,
                s.router_chunk_interval_overload_ms,
            )

        self.ticker = FlushTicker(interval, s.router_chunk_tick_slots) if s.router_chunk_interval_ms > 0 else None
        metrics.chunk_interval.set_function(interval)  # read at scrape time: nothing on the hot path

    # ---- entry point --------------------------------------------------------------------------------
    async def complete(self, req: CompletionRequest) -> CompletionResult:
        """Serve one request: a logical call (`call_key`) already finished or running is replayed or joined
        (see adp_router.calls), anything else goes to the providers."""
        if req.strict_route and not self.config.accepts(req.route):
            raise PlatformError(
                ErrorCode.MODEL_NOT_FOUND, f"no route or model named {req.route!r} (see the models list)"
            )
        if req.call_key is None or self.once is None:
            try:
                return await self._complete_call(req)
            finally:
                self.orphaned.discard(req.request_id)

        def passes_on(err: PlatformError) -> bool:  # a stopped discussion, not a caller that vanished
            return err.code == ErrorCode.CONFLICT and req.request_id not in self.orphaned

        try:
            result, how = await self.once.run(
                req.call_key, lambda: self._complete_call(req), time.monotonic() + req.timeout_s, passes_on
            )
        finally:
            self.orphaned.discard(req.request_id)
        if how == "called":
            return result
        self.metrics.replays.labels(how).inc()
        log.info("request %s %s the result of call %s: no provider call", req.request_id, how, req.call_key)
        if req.stream:
            await self._replay_chunks(req, result)
        return result.model_copy(update={"request_id": req.request_id})

    async def _replay_chunks(self, req: CompletionRequest, result: CompletionResult) -> None:
        """A replayed answer reaches a streaming caller's listeners as one chunk that restarts the text."""
        emitter = ChunkEmitter(
            self.bus.nc,
            req.relay_subject or self.bus.catalog.llm_stream(req.request_id),
            req.request_id,
            relay_template=(req.relay_template or {}) if req.relay_subject else None,
        )
        emitter.restart = True
        emitter.set_provider(result.provider, result.model)
        await emitter.emit(result.text)

    async def _complete_call(self, req: CompletionRequest) -> CompletionResult:
        t0 = time.perf_counter()
        deadline = t0 + req.timeout_s
        track = Track()
        chain: list[RouteEntry] = []
        span = spans.start_call_span(req)
        self.metrics.inflight.inc()
        try:
            with spans.use_span(span):
                chain = self._gate(req, self.config.resolve(req.route, req.persona))
                if req.stream:
                    self.streams += 1
                try:
                    result = await self._cancellable(req, self._run_chain(req, chain, t0, deadline, track))
                finally:
                    if req.stream:
                        self.streams -= 1
        except PlatformError as err:
            latency = (time.perf_counter() - t0) * 1000
            self.metrics.requests.labels(track.provider, track.model, "error").inc()
            self.metrics.errors.labels(track.provider, track.model, err.code.value).inc()
            outcome = spans.outcome_attributes(
                track.provider, track.model, track.input_tokens, track.output_tokens, track.attempts, chain
            )
            spans.finish_error(span, req, chain, err.code.value, err.message, outcome if track.attempts else None)
            log_slow("llm", f"{track.provider}/{track.model}", latency / 1000, request_id=req.request_id)
            with spans.use_span(span):
                await self._record(req, track, latency, err.code.value)
            raise
        except BaseException as err:  # cancelled: the span still ends
            spans.finish_error(span, req, chain, type(err).__name__, "call cancelled", None)
            raise
        finally:
            self.metrics.inflight.dec()
        spans.finish_ok(span, req, chain, result)
        self.metrics.requests.labels(result.provider, result.model, "ok").inc()
        self.metrics.latency.labels(result.provider, result.model).observe(result.latency_ms / 1000)
        if result.ttft_ms is not None:
            self.metrics.ttft.labels(result.provider, result.model).observe(result.ttft_ms / 1000)
        # a streamed answer's length is the model's, not a delay: its first token is what a caller waits for
        waited_ms = result.ttft_ms if req.stream and result.ttft_ms is not None else result.latency_ms
        log_slow("llm", f"{result.provider}/{result.model}", waited_ms / 1000, request_id=req.request_id)
        with spans.use_span(span):
            await self._record(req, track, result.latency_ms, None)
        return result

    async def _cancellable(
        self, req: CompletionRequest, call: Coroutine[Any, Any, CompletionResult]
    ) -> CompletionResult:
        """Run a call so that `cancel_discussion` (a discussion's calls) and `cancel_request` (one call) can
        stop it: it then ends as a CONFLICT error, and its usage so far is recorded like any failed call's
        (what the provider streamed is charged)."""
        task = asyncio.current_task()
        if task is None:
            return await call
        # The caller's own task is what gets cancelled: a task of its own for the call would cost one more
        # turn of the event loop before the provider request leaves (time to first token).
        did = req.discussion_id or ""
        calls = self.calls.setdefault(did, set()) if did else None
        if calls is not None:
            calls.add(task)
        self.calls_by_request[req.request_id] = task
        try:
            return await call
        except asyncio.CancelledError:
            reason = self._cancelled.pop(task, None)
            if reason is None or task.uncancel() > 0:  # cancelled by someone else too (shutdown): give up
                raise
            raise PlatformError(ErrorCode.CONFLICT, f"call cancelled: {reason}") from None
        finally:
            if calls is not None:
                calls.discard(task)
                if not calls:
                    self.calls.pop(did, None)
            if self.calls_by_request.get(req.request_id) is task:
                del self.calls_by_request[req.request_id]
            self._cancelled.pop(task, None)

    def cancel_discussion(self, discussion_id: str, reason: str) -> int:
        """Cancel this copy's in-flight calls of a discussion (the provider connection closes at once, so
        the provider stops generating); the number cancelled."""
        return self._cancel(list(self.calls.get(discussion_id, ())), f"of discussion {discussion_id}", reason)

    def cancel_request(self, request_id: str, reason: str) -> int:
        """Cancel this copy's in-flight call with this request id, if it has one; the number cancelled."""
        task = self.calls_by_request.get(request_id)
        return self._cancel([task] if task is not None else [], f"with request id {request_id}", reason)

    def cancel_orphan(self, request_id: str, reason: str) -> int:
        """Cancel a call whose caller is gone: what streamed is charged, and the caller's next attempt at
        the same logical call runs it afresh rather than failing with this call's error."""
        if request_id in self.calls_by_request:
            self.orphaned.add(request_id)
        return self.cancel_request(request_id, reason)

    def _cancel(self, tasks: list[asyncio.Task[Any]], what: str, reason: str) -> int:
        tasks = [t for t in tasks if not t.done()]
        for task in tasks:
            self._cancelled[task] = reason
            task.cancel()
        if tasks:
            self.metrics.cancelled.inc(len(tasks))
            log.info("cancelled %d call(s) %s: %s", len(tasks), what, reason)
        return len(tasks)

    def _gate(self, req: CompletionRequest, chain: list[RouteEntry]) -> list[RouteEntry]:
        if not chain:
            raise PlatformError(ErrorCode.NO_LLM_PROVIDER_AVAILABLE, f"no provider configured for route {req.route!r}")
        mode = self.settings.router_budget_mode
        if mode == "off":
            return chain
        scope = self.budget.exceeded_scope(req.user_id, req.key_id)
        if scope is None:
            return chain
        if mode == "free_only":
            free = [
                e
                for e in chain
                if e.provider in self.config.providers and self.config.providers[e.provider].config.free
            ]
            if free:
                return free
        self.metrics.budget_rejections.inc()
        raise PlatformError(ErrorCode.BUDGET_EXCEEDED, f"budget exceeded ({scope})")

    # ---- chain and attempts ----------------------------------------------------------------------------
    async def _run_chain(
        self, req: CompletionRequest, chain: list[RouteEntry], t0: float, deadline: float, track: Track
    ) -> CompletionResult:
        emitter = (
            ChunkEmitter(
                self.bus.nc,
                req.relay_subject or self.bus.catalog.llm_stream(req.request_id),
                req.request_id,
                self.ticker,
                relay_template=(req.relay_template or {}) if req.relay_subject else None,
            )
            if req.stream
            else None
        )
        if emitter is not None and req.relay_restart:
            emitter.restart = True  # the caller re-sent this call: listeners drop the partial text they have
        # the last failure's code and message (not the error itself: its traceback holds this frame)
        last: tuple[ErrorCode, str] | None = None
        skipped = 0
        for i, entry in enumerate(chain):
            provider = self.providers.get(entry.provider)
            if provider is None:
                continue
            if not await self.breakers.allow(entry.provider):
                skipped += 1
                continue
            if time.perf_counter() >= deadline:
                break
            try:
                text, st = await self._run_entry(req, provider, entry, emitter, t0, deadline, track)
            except asyncio.CancelledError:
                if emitter is not None:
                    emitter.discard()  # tokens still waiting for their tick are not sent after a cancel
                raise
            except ProviderError as err:
                last = (err.code, err.message)
                if emitter is not None and emitter.seq > 0:
                    if not req.fallback_after_tokens:
                        await emitter.flush()
                        break  # tokens already reached the caller: never switch answers silently
                    emitter.discard()
                if i + 1 < len(chain):
                    self.metrics.fallbacks.labels(entry.provider).inc()
                continue
            if emitter is not None:
                await emitter.flush()  # the caller has every token before the reply
            latency = (time.perf_counter() - t0) * 1000
            return CompletionResult(
                request_id=req.request_id,
                text=text,
                finish_reason=st.finish_reason,
                usage=Usage(
                    input_tokens=track.input_tokens, output_tokens=track.output_tokens, estimated=track.estimated
                ),
                provider=entry.provider,
                model=entry.model,
                simulated=self.config.providers[entry.provider].config.kind == "simulated",
                latency_ms=round(latency, 3),
                ttft_ms=track.ttft_ms,
                attempts=track.attempts,
            )
        if last is None:
            if skipped:
                raise PlatformError(
                    ErrorCode.NO_LLM_PROVIDER_AVAILABLE, f"every provider for route {req.route!r} has an open circuit"
                )
            if time.perf_counter() >= deadline:
                raise PlatformError(ErrorCode.LLM_TIMEOUT, f"deadline of {req.timeout_s:g}s passed")
            raise PlatformError(ErrorCode.NO_LLM_PROVIDER_AVAILABLE, f"no provider available for route {req.route!r}")
        raise PlatformError(*last)

    async def _run_entry(
        self,
        req: CompletionRequest,
        provider: Provider,
        entry: RouteEntry,
        emitter: ChunkEmitter | None,
        t0: float,
        deadline: float,
        track: Track,
    ) -> tuple[str, CallState]:
        # A plain loop rather than tenacity's AsyncRetrying: that object and its call state reference each
        # other, so every call left a cycle (with the emitter its retry test holds) for the cyclic GC.
        attempt = 0
        while True:
            attempt += 1
            sent_before = emitter.seq if emitter else 0
            try:
                return await self._attempt(req, provider, entry, emitter, t0, deadline, track)
            except ProviderError as err:
                # never retry once this attempt streamed tokens to the caller
                if not err.retryable or (emitter is not None and emitter.seq != sent_before):
                    raise
                pause = self._retry_pause(err, attempt)
                if attempt >= self.settings.router_max_attempts or time.perf_counter() + pause >= deadline - 0.01:
                    raise
            await asyncio.sleep(pause)

    def _retry_pause(self, err: ProviderError, attempt: int) -> float:
        """How long to wait before retrying after failed attempt number `attempt`: what the provider asked
        for (Retry-After, capped), else exponential backoff."""
        if err.retry_after is not None:
            return min(err.retry_after, self.settings.router_retry_after_max_s)
        return backoff(attempt, self.settings.router_backoff_initial_s, self.settings.router_backoff_max_s)

    async def _attempt(
        self,
        req: CompletionRequest,
        provider: Provider,
        entry: RouteEntry,
        emitter: ChunkEmitter | None,
        t0: float,
        deadline: float,
        track: Track,
    ) -> tuple[str, CallState]:
        start = time.perf_counter()
        name = entry.provider
        track.provider, track.model = name, entry.model
        track.attempts += 1
        st = CallState()
        if emitter is not None and emitter.ticker is not None:
            st.pace = emitter.pace
        parts: list[str] = []
        remaining = deadline - start
        timeout = min(provider.resolved.config.timeout_s, remaining)
        try:
            if timeout <= 0:
                raise ProviderError(f"deadline of {req.timeout_s:g}s passed before calling {name}", timeout=True)
            try:
                async with asyncio.timeout(timeout):
                    if emitter is not None:
                        emitter.set_provider(name, entry.model)
                        gen = provider.stream(req, entry.model, st, timeout)
                        try:
                            async for delta in gen:
                                if not delta:
                                    continue  # e.g. the role-only first chunk: not a token
                                if not parts:
                                    track.ttft_ms = round((time.perf_counter() - t0) * 1000, 3)
                                parts.append(delta)
                                await emitter.emit(delta)
                        finally:
                            await gen.aclose()  # type: ignore[attr-defined]  # an async generator, typed as AsyncIterator
                    else:
                        parts.append(await provider.complete(req, entry.model, st, timeout))
            except TimeoutError:
                raise ProviderError(f"{name} did not finish within {timeout:.3g}s", timeout=True) from None
        except asyncio.CancelledError:
            self._usage(track, req, st, parts, failed=True)  # cancelled: what streamed so far is charged
            raise
        except ProviderError as err:
            self._usage(track, req, st, parts, failed=True)
            await self._failed(name, entry.model, start, err)
            raise
        except Exception as err:  # an adapter bug must not crash the call: report a clean provider error
            log.exception("provider %s failed unexpectedly", name)
            perr = ProviderError(f"{name} failed: {type(err).__name__}")
            self._usage(track, req, st, parts, failed=True)
            await self._failed(name, entry.model, start, perr)
            raise perr from None
        text = "".join(parts)
        self._usage(track, req, st, parts, failed=False)
        now = time.perf_counter()
        self.health.record(name, time.time(), True, (now - start) * 1000)
        self.metrics.attempts.labels(name, "ok").inc()
        await self.breakers.success(name)
        return text, st

    async def _failed(self, name: str, model: str, start: float, err: ProviderError) -> None:
        self.health.record(name, time.time(), False, (time.perf_counter() - start) * 1000)
        self.metrics.attempts.labels(name, "timeout" if err.timeout else "error").inc()
        self.metrics.errors.labels(name, model, err.code.value).inc()
        if err.counts_for_breaker:
            await self.breakers.failure(name)
        log.warning("attempt on %s failed: %s", name, err.message)

    @staticmethod
    def _usage(track: Track, req: CompletionRequest, st: CallState, parts: list[str], *, failed: bool) -> None:
        """Usage of the latest attempt: the provider's figures, else an estimate (chars/4) marked estimated.
        Failed attempts that streamed nothing cost nothing."""
        if failed and not parts and st.input_tokens is None:
            track.input_tokens = track.output_tokens = 0
            track.estimated = False
            return
        est = False
        if st.input_tokens is not None:
            track.input_tokens = st.input_tokens
        else:
            track.input_tokens = sum(estimate_tokens(m.content) + 4 for m in req.messages)
            est = True
        if st.output_tokens is not None and not failed:
            track.output_tokens = st.output_tokens
        else:
            track.output_tokens = estimate_tokens("".join(parts))
            est = est or bool(parts)
        track.estimated = est

    # ---- usage records ---------------------------------------------------------------------------------
    async def _record(self, req: CompletionRequest, track: Track, latency_ms: float, error: str | None) -> None:
        rec = UsageRecord(
            request_id=req.request_id,
            user_id=req.user_id,
            key_id=req.key_id,
            discussion_id=req.discussion_id,
            persona=req.persona,
            route=req.route,
            provider=track.provider,
            model=track.model,
            input_tokens=track.input_tokens,
            output_tokens=track.output_tokens,
            estimated=track.estimated,
            latency_ms=round(latency_ms, 3),
            ttft_ms=track.ttft_ms,
            status="error" if error else "ok",
            error_code=error,
        )
        for tries in range(1, USAGE_PUBLISH_RETRY.attempts + 1):
            try:
                await self.bus.publish_event(self.bus.catalog.usage_record, rec, msg_id=req.request_id, timeout=3)
                return
            except Exception as err:
                if tries == USAGE_PUBLISH_RETRY.attempts:
                    log.error("usage record %s not published: %s", req.request_id, err)
                    return
                with contextlib.suppress(asyncio.CancelledError):  # a cancelled call is still charged
                    await asyncio.sleep(USAGE_PUBLISH_RETRY.pause(tries))
