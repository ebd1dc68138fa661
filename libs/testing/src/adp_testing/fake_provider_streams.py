"""How the fake provider streams an answer: the OpenAI-compatible chunk stream and the Anthropic event
stream, each with the faults that break a stream part-way (a data line that is not JSON, JSON of the wrong
shape). The tokens come from the caller, which also counts the usage a stream reports."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from adp_testing.fake_provider_setup import Fault

CountUsage = Callable[[int, int], None]


async def openai_stream(
    head: dict[str, Any],
    tokens: AsyncIterator[tuple[int, str]],
    fault: Fault | None,
    inp: int,
    include_usage: bool,
    count_usage: CountUsage,
) -> AsyncIterator[bytes]:
    """`head`: the fields every chunk repeats (id, object, created, model)."""
    first = {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    yield f"data: {json.dumps(first)}\n\n".encode()
    out = 0
    async for i, tok in tokens:
        if fault is not None and fault.malformed_sse and i == 2:
            yield b"data: {this is not json\n\n"
            return
        if fault is not None and fault.wrong_json and i == 2:
            yield f"data: {json.dumps({'unexpected': [1, 2, 3]})}\n\n".encode()
            return
        chunk = {**head, "choices": [{"index": 0, "delta": {"content": tok}, "finish_reason": None}]}
        yield f"data: {json.dumps(chunk)}\n\n".encode()
        out += 1
    last = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    yield f"data: {json.dumps(last)}\n\n".encode()
    if include_usage and not (fault and fault.no_usage):
        usage = {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out}
        # Count before sending: a client may close the stream as soon as it has the usage.
        count_usage(inp, out)
        yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n".encode()
    else:
        count_usage(0, 0)
    yield b"data: [DONE]\n\n"


def _anthropic_event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


async def anthropic_stream(
    mid: str,
    model: str,
    tokens: AsyncIterator[tuple[int, str]],
    fault: Fault | None,
    inp: int,
    no_usage: bool,
    count_usage: CountUsage,
) -> AsyncIterator[bytes]:
    ev = _anthropic_event
    start_usage = {} if no_usage else {"usage": {"input_tokens": inp, "output_tokens": 1}}
    message = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": []}
    yield ev("message_start", {"message": {**message, "stop_reason": None, **start_usage}})
    yield ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    yield ev("ping", {})
    out = 0
    async for i, tok in tokens:
        if fault is not None and fault.malformed_sse and i == 2:
            yield b"event: content_block_delta\ndata: {broken\n\n"
            return
        if fault is not None and fault.wrong_json and i == 2:
            yield ev("content_block_delta", {"index": 0, "delta": "not an object"})
            return
        yield ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": tok}})
        out += 1
    yield ev("content_block_stop", {"index": 0})
    delta_usage = {} if no_usage else {"usage": {"output_tokens": out}}
    # Count before sending: a client may close the stream as soon as it has the usage.
    count_usage(0 if no_usage else inp, 0 if no_usage else out)
    yield ev("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, **delta_usage})
    yield ev("message_stop", {})
