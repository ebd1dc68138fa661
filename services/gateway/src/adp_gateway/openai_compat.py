"""OpenAI chat-completions wire format <-> the platform's CompletionRequest/CompletionResult (pure)."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from adp_common.errors import ErrorCode
from adp_common.schemas.llm import ChatMessage, CompletionChunk, CompletionRequest, CompletionResult, ModelList


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"] = Field(description="only text parts are supported")
    text: str | None = None


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=200)
    messages: list[OpenAIMessage] = Field(min_length=1, max_length=1000)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=200)
    n: int | None = Field(default=None, ge=1, le=1)


class OpenAIError(Exception):
    """An error the OpenAI-compatible API answers in OpenAI's own shape
    (`{"error": {"message", "type", "param", "code"}}`), so OpenAI clients raise their usual exception."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": "invalid_request_error", "param": self.param, "code": self.code}
        }


# Request fields this server does not implement, with the values that ask for nothing (accepted as no-ops).
UNSUPPORTED_FIELDS: dict[str, tuple[Any, ...]] = {
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "response_format": (None, {"type": "text"}),
    "parallel_tool_calls": (None, False, True),
}


def check_supported(body: ChatCompletionRequest) -> None:
    """400 naming the first field that asks for something this server does not do (never silently drop it)."""
    extra = body.model_extra or {}
    for name, no_ops in UNSUPPORTED_FIELDS.items():
        if name in extra and extra[name] not in no_ops:
            raise OpenAIError(400, "unsupported_parameter", f"'{name}' is not supported by this server", param=name)


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(
        404,
        "model_not_found",
        f"The model '{model}' does not exist: use a model or route listed by GET /v1/models, or 'provider/model'",
        param="model",
    )


def _text(content: str | list[ContentPart] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text or "" for part in content)  # text parts only (ContentPart.type)


def to_completion_request(
    body: ChatCompletionRequest, *, user_id: str, timeout_s: float, key_id: str | None = None
) -> CompletionRequest:
    messages = [
        ChatMessage(role="system" if m.role == "developer" else m.role, content=_text(m.content)) for m in body.messages
    ]
    return CompletionRequest(
        messages=messages,
        route=body.model,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        stream=body.stream,
        user_id=user_id,
        key_id=key_id,
        timeout_s=timeout_s,
        task="chat",
        strict_route=True,
    )


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def usage_dict(result: CompletionResult) -> dict[str, int]:
    p, c = result.usage.input_tokens, result.usage.output_tokens
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def completion_response(result: CompletionResult, *, model: str, created: int | None = None) -> dict[str, Any]:
    return {
        "id": completion_id(result.request_id),
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": result.model or model,  # the model that answered, as OpenAI reports it
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "logprobs": None,
                "finish_reason": result.finish_reason or "stop",
            }
        ],
        "usage": usage_dict(result),
        "system_fingerprint": None,
        # extensions (ignored by OpenAI clients): which provider answered, and whether it was simulated
        "provider": result.provider,
        "simulated": result.simulated,
    }


def chunk_object(
    request_id: str,
    *,
    model: str,
    created: int,
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    include_usage: bool = False,
    usage: dict[str, int] | None = None,
    final_usage: bool = False,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": completion_id(request_id),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": []
        if final_usage
        else [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}],
    }
    if include_usage:
        obj["usage"] = usage if final_usage else None
    return obj


def sse_data(obj: dict[str, Any] | str) -> bytes:
    text = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"), default=str)
    return f"data: {text}\n\n".encode()


class SentText:
    """What an OpenAI client has of a streamed answer, which cannot be taken back. Chunks are sent while they
    come in order; once one is missing (lost while a NATS server restarted) or the answer restarts (the call
    was re-sent to another router copy, which joined the running call, replayed its result or made it again,
    and the attempts' chunks may interleave), nothing more is sent until the call's result: then the rest of
    its text after what was sent. A result that does not begin with it is an error (`rest` is None)."""

    def __init__(self) -> None:
        self._parts: list[str] = []  # the text sent
        self._next = 0  # the seq of the chunk that comes next in order
        self._held = False

    def take(self, c: CompletionChunk) -> str | None:
        """The part of chunk `c` to send now (None: nothing, until the result)."""
        if c.restart or c.seq > self._next:
            self._held = True
        if self._held or c.seq < self._next:
            return None
        self._next = c.seq + 1
        self._parts.append(c.delta)
        return c.delta

    def rest(self, text: str) -> str | None:
        """What is left to send of the answer's whole `text`; None when it differs from what was sent."""
        sent = "".join(self._parts)
        return text[len(sent) :] if text.startswith(sent) else None


class StreamEncoder:
    """Turns router chunks and the final result into OpenAI `chat.completion.chunk` SSE frames."""

    def __init__(self, request_id: str, *, model: str, include_usage: bool) -> None:
        """`model`: the model that answers (the router names it on every chunk; the same as a non-streamed
        reply's), else the requested one."""
        self.request_id = request_id
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time())
        self.started = False
        # A text chunk is the same frame every time but for its text: built once, around the JSON string (the
        # delta is the frame's last object holding an empty string: quotes inside the model name are escaped).
        head, _, tail = self._chunk(delta={"content": ""}).rpartition(b'"delta":{"content":""}')
        self._text_head, self._text_tail = head + b'"delta":{"content":', b"}" + tail
        self.text = SentText()

    def _chunk(self, **kw: Any) -> bytes:
        return sse_data(
            chunk_object(
                self.request_id, model=self.model, created=self.created, include_usage=self.include_usage, **kw
            )
        )

    def start(self) -> bytes:
        self.started = True
        return self._chunk(delta={"role": "assistant", "content": ""})

    def _text(self, text: str) -> bytes:
        return self._text_head + json.dumps(text).encode() + self._text_tail

    def chunks(self, cs: list[CompletionChunk]) -> bytes:
        """Several chunks' frames in one piece (one write to the client)."""
        return b"".join([self._text(t) for c in cs if (t := self.text.take(c)) is not None])

    def finish(self, result: CompletionResult) -> bytes:
        """The end of the stream: the answer's text not sent yet, its finish reason and usage; an error when
        the answer differs from the text already sent (a re-sent call that the provider answered anew)."""
        rest = self.text.rest(result.text)
        if rest is None:
            return self.error(ErrorCode.LLM_PROVIDER_ERROR.value, "the answer changed while it was re-sent")
        out = self._text(rest) if rest else b""
        out += self._chunk(delta={}, finish_reason=result.finish_reason or "stop")
        if self.include_usage:
            out += self._chunk(final_usage=True, usage=usage_dict(result))
        return out + sse_data("[DONE]")

    def error(self, code: str, message: str) -> bytes:
        return sse_data({"error": {"code": code, "message": message}}) + sse_data("[DONE]")


def models_response(models: ModelList) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                "id": m.id,
                "object": "model",
                "created": 0,
                "owned_by": m.owned_by or m.provider,
                "provider": m.provider,
                "simulated": m.simulated,
                "kind": m.kind,
            }
            for m in models.models
        ],
    }
