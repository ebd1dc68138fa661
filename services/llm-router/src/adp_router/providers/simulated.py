"""The built-in offline provider: deterministic persona-aware text with realistic token timing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from adp_common.schemas.llm import CompletionRequest
from adp_router.config import ResolvedProvider
from adp_router.providers.base import CallState
from adp_router.simulated_text import estimate_tokens, generate, tokens_of


class SimulatedProvider:
    def __init__(self, resolved: ResolvedProvider, *, ttft_s: float = 0.15, tokens_per_s: float = 60.0) -> None:
        self.resolved = resolved
        self.ttft_s = ttft_s
        self.tokens_per_s = tokens_per_s

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
        pieces = self._pieces(req, st)
        total = self.ttft_s + len(pieces) / self.tokens_per_s
        if total > 0.001:
            await asyncio.sleep(total)
        return "".join(pieces)
