"""Provider adapters: OpenAI-compatible chat completions, Anthropic messages, and the simulated provider."""

from __future__ import annotations

import aiohttp

from adp_router.config import ResolvedProvider
from adp_router.providers.anthropic import AnthropicProvider
from adp_router.providers.base import CallState, Provider, ProviderError
from adp_router.providers.openai_compat import OpenAIProvider
from adp_router.providers.simulated import FaultLookup, SimulatedProvider

__all__ = ["CallState", "Provider", "ProviderError", "build_provider"]


def build_provider(
    rp: ResolvedProvider,
    client: aiohttp.ClientSession,
    *,
    connect_timeout: float = 10.0,
    default_max_tokens: int = 1024,
    simulated_ttft_s: float = 0.15,
    simulated_tokens_per_s: float = 60.0,
    faults: FaultLookup | None = None,
) -> Provider:
    kind = rp.config.kind
    if kind == "simulated":
        return SimulatedProvider(rp, ttft_s=simulated_ttft_s, tokens_per_s=simulated_tokens_per_s, faults=faults)
    if kind == "anthropic":
        return AnthropicProvider(rp, client, connect_timeout=connect_timeout, default_max_tokens=default_max_tokens)
    return OpenAIProvider(rp, client, connect_timeout=connect_timeout)
