"""The built-in offline provider: deterministic persona-aware text with realistic token timing, and the
operator's injected faults (outage, errors, 429 with Retry-After, added latency, stalls) for rehearsals."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable

from adp_common.schemas.faults import ProviderFault, decide
from adp_common.schemas.llm import CompletionRequest
from adp_router.config import ResolvedProvider
from adp_router.providers.base import CallState, ProviderError
from adp_router.simulated_text import estimate_tokens, generate, tokens_of

FaultLookup = Callable[[str], ProviderFault | None]


class SimulatedProvider:
    def __init__(
        self,
        resolved: ResolvedProvider,
        *,
        ttft_s: float = 0.15,
        tokens_per_s: float = 60.0,
        faults: FaultLookup | None = None,
    ) -> None:
        self.resolved = resolved
        self.ttft_s = ttft_s
        self.tokens_per_s = tokens_per_s
        self.faults = faults

    async def _apply_fault(self) -> None:
        """Act out the injected fault for this call, if any: wait, then fail the way a real provider would."""
        fault = self.faults(self.name) if self.faults is not None else None
        decision = decide(fault, random.random())
        if decision.delay_s > 0:
            await asyncio.sleep(decision.delay_s)
        if decision.outcome == "ok" or fault is None:
            return
        if decision.outcome == "outage":
            raise ProviderError(f"{self.name}: HTTP 503 (simulated outage)", retryable=True, status=503)
        if decision.outcome == "error":
            raise ProviderError(f"{self.name}: HTTP 500 (simulated error)", retryable=True, status=500)
        if decision.outcome == "rate_limited":
            raise ProviderError(
                f"{self.name}: HTTP 429 (simulated rate limit)",
                retryable=True,
                status=429,
                retry_after=fault.retry_after_s,
            )
        await asyncio.sleep(fault.stall_s)  # stall: the router's timeout usually ends the call first
        raise ProviderError(f"{self.name} stalled for {fault.stall_s:g}s (simulated)", timeout=True)

    @property
    def name(self) -> str:
        return self.resolved.name

    def _pieces(self, req: CompletionRequest, st: CallState) -> list[str]:
        pieces = tokens_of(generate(req))
        if req.max_tokens is not None:
            kept: list[str] = []
            used = 0
            for p in pieces:
                used += estimate_tokens(p)
                if used > req.max_tokens:
                    st.finish_reason = "length"
                    break
                kept.append(p)
            pieces = kept
        st.input_tokens = sum(estimate_tokens(m.content) + 4 for m in req.messages)
        st.output_tokens = estimate_tokens("".join(pieces))
        return pieces

    async def stream(self, req: CompletionRequest, model: str, st: CallState, timeout: float) -> AsyncIterator[str]:
        await self._apply_fault()
        pieces = self._pieces(req, st)
        start = time.monotonic()
        if self.ttft_s > 0:
            await asyncio.sleep(self.ttft_s)
        interval = 1.0 / self.tokens_per_s
        for i, piece in enumerate(pieces):
            due = start + self.ttft_s + i * interval
            ahead = due - time.monotonic()
            if ahead > 0.001:
                await asyncio.sleep(ahead)
            yield piece

    async def complete(self, req: CompletionRequest, model: str, st: CallState, timeout: float) -> str:
        await self._apply_fault()
        pieces = self._pieces(req, st)
        total = self.ttft_s + len(pieces) / self.tokens_per_s
        if total > 0.001:
            await asyncio.sleep(total)
        return "".join(pieces)
