"""The routing engine: budget gate, fallback chain, breakers, retries, usage records.

Streamed tokens are paced and published by `adp_router.pacing` (ChunkEmitter on a shared FlushTicker)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from adp_common.bus import Bus
from adp_common.errors import ErrorCode, PlatformError
from adp_common.logging import log_slow
from adp_common.retry import Backoff
from adp_common.schemas.llm import CompletionRequest, CompletionResult, Usage
from adp_router import spans
from adp_router.breaker import BreakerBoard
from adp_router.budget import BudgetGate
from adp_router.calls import OnceCalls
from adp_router.config import RouteEntry, RouterConfig
from adp_router.health import HealthBoard
from adp_router.inflight import InFlight
from adp_router.metrics import RouterMetrics
from adp_router.pacing import ChunkEmitter, FlushTicker, chunk_interval_s
from adp_router.providers import CallState, Provider, ProviderError
from adp_router.settings import RouterSettings
from adp_router.usage import Track, account, publish_usage, usage_record

log = logging.getLogger("adp.router")


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
        self.inflight = InFlight(metrics)  # in-flight calls, to cancel a discussion's or one
        self.once: OnceCalls | None = None  # logical calls' results, when the router runs with its bucket
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
                self.inflight.orphaned.discard(req.request_id)

        def passes_on(err: PlatformError) -> bool:  # a stopped discussion, not a caller that vanished
            return err.code == ErrorCode.CONFLICT and req.request_id not in self.inflight.orphaned

        try:
            result, how = await self.once.run(
                req.call_key,
                lambda: self._complete_call(req),
                time.monotonic() + req.timeout_s,
                passes_on,
                fresh=req.fresh,
                claim_after_s=req.claim_after_s,
            )
        finally:
            self.inflight.orphaned.discard(req.request_id)
        if how == "called":
            return result
        self.metrics.replays.labels(how).inc()
        log.info("request %s %s the result of call %s: no provider call", req.request_id, how, req.call_key)
        if req.stream:
            await self._replay_chunks(req, result)
        return result.model_copy(update={"request_id": req.request_id})

    async def _replay_chunks(self, req: CompletionRequest, result: CompletionResult) -> None:
        """A replayed answer reaches a streaming caller's listeners as one chunk that restarts the text."""
        emitter = self._emitter(req, paced=False)
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
                    result = await self.inflight.run(req, self._run_chain(req, chain, t0, deadline, track))
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
    def _emitter(self, req: CompletionRequest, *, paced: bool = True) -> ChunkEmitter:
        """A streaming call's chunk publisher: to the caller's stream subject, or relayed straight to the final
        listeners; `paced` on this copy's flush ticker."""
        emitter = ChunkEmitter(
            self.bus.nc,
            req.relay_subject or self.bus.catalog.llm_stream(req.request_id),
            req.request_id,
            self.ticker if paced else None,
            relay_template=(req.relay_template or {}) if req.relay_subject else None,
        )
        if req.relay_restart:
            emitter.restart = True  # the caller re-sent this call: listeners drop the partial text they have
        return emitter

    def _result(
        self, req: CompletionRequest, entry: RouteEntry, text: str, st: CallState, track: Track, t0: float
    ) -> CompletionResult:
        latency = (time.perf_counter() - t0) * 1000
        return CompletionResult(
            request_id=req.request_id,
            text=text,
            finish_reason=st.finish_reason,
            usage=Usage(input_tokens=track.input_tokens, output_tokens=track.output_tokens, estimated=track.estimated),
            provider=entry.provider,
            model=entry.model,
            simulated=self.config.providers[entry.provider].config.kind == "simulated",
            latency_ms=round(latency, 3),
            ttft_ms=track.ttft_ms,
            attempts=track.attempts,
        )

    @staticmethod
    def _chain_failed(
        req: CompletionRequest, last: tuple[ErrorCode, str] | None, skipped: int, deadline: float
    ) -> PlatformError:
        """Why no provider of the chain answered: the last failure, else open circuits, the deadline, none."""
        if last is not None:
            return PlatformError(*last)
        if skipped:
            return PlatformError(
                ErrorCode.NO_LLM_PROVIDER_AVAILABLE, f"every provider for route {req.route!r} has an open circuit"
            )
        if time.perf_counter() >= deadline:
            return PlatformError(ErrorCode.LLM_TIMEOUT, f"deadline of {req.timeout_s:g}s passed")
        return PlatformError(ErrorCode.NO_LLM_PROVIDER_AVAILABLE, f"no provider available for route {req.route!r}")

    async def _run_chain(
        self, req: CompletionRequest, chain: list[RouteEntry], t0: float, deadline: float, track: Track
    ) -> CompletionResult:
        emitter = self._emitter(req) if req.stream else None
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
            return self._result(req, entry, text, st, track, t0)
        raise self._chain_failed(req, last, skipped, deadline)

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
                        await self._stream(req, provider, entry, st, timeout, emitter, parts, track, t0)
                    else:
                        parts.append(await provider.complete(req, entry.model, st, timeout))
            except TimeoutError:
                raise ProviderError(f"{name} did not finish within {timeout:.3g}s", timeout=True) from None
        except asyncio.CancelledError:
            account(track, req, st, parts, failed=True)  # cancelled: what streamed so far is charged
            raise
        except ProviderError as err:
            account(track, req, st, parts, failed=True)
            await self._failed(name, entry.model, start, err)
            raise
        except Exception as err:  # an adapter bug must not crash the call: report a clean provider error
            log.exception("provider %s failed unexpectedly", name)
            perr = ProviderError(f"{name} failed: {type(err).__name__}")
            account(track, req, st, parts, failed=True)
            await self._failed(name, entry.model, start, perr)
            raise perr from None
        text = "".join(parts)
        account(track, req, st, parts, failed=False)
        now = time.perf_counter()
        self.health.record(name, time.time(), True, (now - start) * 1000)
        self.metrics.attempts.labels(name, "ok").inc()
        await self.breakers.success(name)
        return text, st

    @staticmethod
    async def _stream(
        req: CompletionRequest,
        provider: Provider,
        entry: RouteEntry,
        st: CallState,
        timeout: float,
        emitter: ChunkEmitter,
        parts: list[str],
        track: Track,
        t0: float,
    ) -> None:
        """Stream one attempt's answer: every token into `parts` and out through `emitter`."""
        emitter.set_provider(entry.provider, entry.model)
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

    async def _failed(self, name: str, model: str, start: float, err: ProviderError) -> None:
        self.health.record(name, time.time(), False, (time.perf_counter() - start) * 1000)
        self.metrics.attempts.labels(name, "timeout" if err.timeout else "error").inc()
        self.metrics.errors.labels(name, model, err.code.value).inc()
        if err.counts_for_breaker:
            await self.breakers.failure(name)
        log.warning("attempt on %s failed: %s", name, err.message)

    # ---- usage records ---------------------------------------------------------------------------------
    async def _record(self, req: CompletionRequest, track: Track, latency_ms: float, error: str | None) -> None:
        await publish_usage(self.bus, req.request_id, usage_record(req, track, latency_ms, error))
