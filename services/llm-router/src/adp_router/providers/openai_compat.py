"""OpenAI-compatible chat completions (Groq, Mistral, OpenRouter, OpenAI, Ollama, vLLM, ...)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from adp_common.schemas.llm import CompletionRequest
from adp_common.sse import SSEEvent
from adp_router.config import ResolvedProvider
from adp_router.providers.base import (
    CallState,
    Endpoint,
    ProviderError,
    json_object,
    malformed,
)


class OpenAIProvider:
    def __init__(
        self, resolved: ResolvedProvider, client: aiohttp.ClientSession, *, connect_timeout: float = 10.0
    ) -> None:
        self.resolved = resolved
        cfg = resolved.config
        url = cfg.base_url.rstrip("/") + "/chat/completions"
        headers = {"content-type": "application/json", **cfg.headers}
        if resolved.api_key:
            headers["authorization"] = f"Bearer {resolved.api_key}"
        self.endpoint = Endpoint(client, resolved.name, url, headers, connect_timeout)

    @property
    def name(self) -> str:
        return self.resolved.name

    def _body(self, req: CompletionRequest, model: str, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in req.messages],
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if req.max_tokens is not None:
            body["max_tokens"] = req.max_tokens
        if req.temperature is not None:
            body["temperature"] = req.temperature
        return body

    async def stream(self, req: CompletionRequest, model: str, st: CallState, timeout: float) -> AsyncIterator[str]:
        name = self.name
        done = finished = False

        def text_of(ev: SSEEvent) -> str | None:
            nonlocal done, finished
            if ev.data == "[DONE]":
                done = True
                return None
            obj = json_object(name, ev.data)
            if "error" in obj:
                raise ProviderError(f"{name} stream error: {str(obj['error'])[:200]}", retryable=True)
            content = None
            choices = obj.get("choices")
            if choices:
                try:
                    ch = choices[0]
                    delta = ch.get("delta") or {}
                    content = delta.get("content")
                    reason = ch.get("finish_reason")
                except (AttributeError, IndexError, KeyError, TypeError):
                    raise malformed(name, "unexpected chunk shape") from None
                if content and not isinstance(content, str):
                    raise malformed(name, "delta content is not text")
                if reason:
                    st.finish_reason = str(reason)
                    finished = True
            elif choices is None and "usage" not in obj:
                raise malformed(name, "chunk without choices")
            usage = obj.get("usage")
            if isinstance(usage, dict):
                _take_usage(st, usage)
            return content

        deltas = self.endpoint.deltas(self._body(req, model, True), timeout, text_of, is_last=_is_done, pace=st.pace)
        async with contextlib.aclosing(deltas):
            async for text in deltas:
                yield text
        if not done and not finished:
            raise ProviderError(f"{name} stream ended before completion", retryable=True)

    async def complete(self, req: CompletionRequest, model: str, st: CallState, timeout: float) -> str:
        name = self.name
        data = await self.endpoint.post(self._body(req, model, False), timeout)
        try:
            obj = json.loads(data)
            choice = obj["choices"][0]
            text = choice["message"]["content"] or ""
            if not isinstance(text, str):
                raise TypeError("content")
            st.finish_reason = str(choice.get("finish_reason") or "stop")
            usage = obj.get("usage")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise malformed(name, f"unexpected response body: {data[:80].decode(errors='replace')!r}") from None
        if isinstance(usage, dict):
            _take_usage(st, usage)
        return text


def _is_done(ev: SSEEvent) -> bool:
    return ev.data == "[DONE]"


def _take_usage(st: CallState, usage: dict[str, Any]) -> None:
    pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(pt, int):
        st.input_tokens = pt
    if isinstance(ct, int):
        st.output_tokens = ct
