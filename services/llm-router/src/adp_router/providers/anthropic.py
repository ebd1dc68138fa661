"""Anthropic messages API (streaming events: message_start, content_block_delta, message_delta, message_stop)."""

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

API_VERSION = "2023-06-01"
RETRYABLE_ERROR_TYPES = {"overloaded_error", "api_error", "rate_limit_error"}


def to_anthropic(req: CompletionRequest) -> tuple[str, list[dict[str, str]]]:
    """System prompt apart; consecutive same-role messages merged; the first message must be the user's."""
    system = "\n\n".join(m.content for m in req.messages if m.role == "system")
    out: list[dict[str, str]] = []
    for m in req.messages:
        if m.role == "system":
            continue
        if out and out[-1]["role"] == m.role:
            out[-1]["content"] += "\n\n" + m.content
        else:
            out.append({"role": m.role, "content": m.content})
    if not out or out[0]["role"] != "user":
        out.insert(0, {"role": "user", "content": "(continue)"})
    return system, out


class AnthropicProvider:
    def __init__(
        self,
        resolved: ResolvedProvider,
        client: aiohttp.ClientSession,
        *,
        connect_timeout: float = 10.0,
        default_max_tokens: int = 1024,
    ) -> None:
        self.resolved = resolved
        self.default_max_tokens = default_max_tokens
        cfg = resolved.config
        url = cfg.base_url.rstrip("/") + "/v1/messages"
        headers = {"content-type": "application/json", "anthropic-version": API_VERSION, **cfg.headers}
        if resolved.api_key:
            headers["x-api-key"] = resolved.api_key
        self.endpoint = Endpoint(client, resolved.name, url, headers, connect_timeout)

    @property
    def name(self) -> str:
        return self.resolved.name

    def _body(self, req: CompletionRequest, model: str, stream: bool) -> dict[str, Any]:
        system, messages = to_anthropic(req)
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": req.max_tokens or self.default_max_tokens,
            "stream": stream,
        }
        if system:
            body["system"] = system
        if req.temperature is not None:
            body["temperature"] = min(req.temperature, 1.0)
        return body

    async def stream(self, req: CompletionRequest, model: str, st: CallState, timeout: float) -> AsyncIterator[str]:
        name = self.name
        stopped = False

        def text_of(ev: SSEEvent) -> str | None:
            nonlocal stopped
            obj = json_object(name, ev.data)
            kind = obj.get("type") or ev.event
            try:
                if kind == "content_block_delta":
                    delta = obj["delta"]
                    if delta.get("type") == "text_delta":
                        text = delta["text"]
                        if not isinstance(text, str):
                            raise TypeError("text")
                        return text
                elif kind == "message_start":
                    usage = obj["message"].get("usage") or {}
                    if isinstance(usage.get("input_tokens"), int):
                        st.input_tokens = usage["input_tokens"]
                    if isinstance(usage.get("output_tokens"), int):
                        st.output_tokens = usage["output_tokens"]
                elif kind == "message_delta":
                    reason = (obj.get("delta") or {}).get("stop_reason")
                    if reason:
                        st.finish_reason = _finish(reason)
                    usage = obj.get("usage") or {}
                    if isinstance(usage.get("output_tokens"), int):
                        st.output_tokens = usage["output_tokens"]
                    if isinstance(usage.get("input_tokens"), int):
                        st.input_tokens = usage["input_tokens"]
                elif kind == "message_stop":
                    stopped = True
                elif kind == "error":
                    err = obj.get("error") or {}
                    etype = err.get("type", "error")
                    raise ProviderError(
                        f"{name} stream error {etype}: {str(err.get('message', ''))[:200]}",
                        retryable=etype in RETRYABLE_ERROR_TYPES,
                    )
                elif kind not in ("ping", "content_block_start", "content_block_stop"):
                    raise malformed(name, f"unknown event type {kind!r}")
            except (KeyError, TypeError, AttributeError):
                raise malformed(name, f"unexpected {kind} event shape") from None
            return None

        deltas = self.endpoint.deltas(self._body(req, model, True), timeout, text_of, is_last=_is_stop, pace=st.pace)
        async with contextlib.aclosing(deltas):
            async for text in deltas:
                yield text
        if not stopped:
            raise ProviderError(f"{name} stream ended before message_stop", retryable=True)

    async def complete(self, req: CompletionRequest, model: str, st: CallState, timeout: float) -> str:
        name = self.name
        data = await self.endpoint.post(self._body(req, model, False), timeout)
        try:
            obj = json.loads(data)
            blocks = obj["content"]
            text = "".join(b["text"] for b in blocks if b.get("type") == "text")
            st.finish_reason = _finish(obj.get("stop_reason") or "end_turn")
            usage = obj.get("usage") or {}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise malformed(name, f"unexpected response body: {data[:80].decode(errors='replace')!r}") from None
        if isinstance(usage.get("input_tokens"), int):
            st.input_tokens = usage["input_tokens"]
        if isinstance(usage.get("output_tokens"), int):
            st.output_tokens = usage["output_tokens"]
        return text


def _is_stop(ev: SSEEvent) -> bool:
    return ev.event == "message_stop" or '"message_stop"' in ev.data


def _finish(reason: str) -> str:
    return {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}.get(reason, reason)
