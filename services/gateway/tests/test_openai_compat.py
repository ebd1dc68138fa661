"""OpenAI-compatible request mapping and stream encoding."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from adp_common.schemas.llm import CompletionChunk, CompletionResult, Usage
from adp_gateway.openai_compat import ChatCompletionRequest, StreamEncoder, to_completion_request


def test_openai_mapping_and_stream_encoding() -> None:
    body = ChatCompletionRequest.model_validate(
        {
            "model": "fast",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]},
            ],
            "max_completion_tokens": 5,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    req = to_completion_request(body, user_id="u1", timeout_s=30)
    assert req.route == "fast" and req.max_tokens == 5 and req.user_id == "u1"
    assert [m.role for m in req.messages] == ["system", "user"] and req.messages[1].content == "hi there"
    with pytest.raises(ValidationError, match="text"):  # only text parts (documented in the schema)
        ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}
        )
    enc = StreamEncoder("r1", model="fast", include_usage=True)
    frames = (
        enc.start()
        + enc.chunks([CompletionChunk(request_id="r1", seq=0, delta="Hel")])
        + enc.finish(
            CompletionResult(
                request_id="r1", text="Hel", provider="sim", model="m", usage=Usage(input_tokens=3, output_tokens=1)
            )
        )
    ).decode()
    datas = [f[len("data: ") :] for f in frames.strip().split("\n\n")]
    assert datas[-1] == "[DONE]"
    objs = [json.loads(d) for d in datas[:-1]]
    assert all(o["object"] == "chat.completion.chunk" and o["id"] == "chatcmpl-r1" for o in objs)
    assert objs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert objs[1]["choices"][0]["delta"] == {"content": "Hel"} and objs[1]["usage"] is None
    assert objs[2]["choices"][0]["finish_reason"] == "stop"
    assert objs[3]["choices"] == [] and objs[3]["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 1,
        "total_tokens": 4,
    }


@pytest.mark.parametrize("model", ["fast", 'we"ird "delta":{"content":""} }', "modèle\\n\u2028"])
@pytest.mark.parametrize("include_usage", [True, False])
def test_a_text_chunk_frame_is_the_whole_chunk_object_whatever_the_model_name(model: str, include_usage: bool) -> None:
    enc = StreamEncoder("r1", model=model, include_usage=include_usage)
    deltas = ['He said "hi"\n', "", "\u00e9\u2028</script>"]
    frames = enc.chunks([CompletionChunk(request_id="r1", seq=i, delta=d) for i, d in enumerate(deltas)])
    datas = [f[len("data: ") :] for f in frames.decode().strip().split("\n\n")]
    objs = [json.loads(d) for d in datas]
    assert [o["choices"][0]["delta"] for o in objs] == [{"content": d} for d in deltas]
    assert all(o["model"] == model and o["id"] == "chatcmpl-r1" for o in objs)
    assert all(("usage" in o) is include_usage for o in objs)


def stream_text(enc: StreamEncoder, chunks: list[CompletionChunk], result: CompletionResult) -> tuple[str, str]:
    """(the text an OpenAI client reads, how its stream ends: a finish reason or an error code)"""
    frames = (enc.chunks(chunks) + enc.finish(result)).decode()
    objs = [json.loads(f[len("data: ") :]) for f in frames.strip().split("\n\n")[:-1]]
    text = "".join(o["choices"][0]["delta"].get("content", "") for o in objs if o.get("choices"))
    errors = [o["error"]["code"] for o in objs if "error" in o]
    return text, errors[0] if errors else objs[-1]["choices"][0]["finish_reason"]


def chunk(seq: int, delta: str, restart: bool = False) -> CompletionChunk:
    return CompletionChunk(request_id="r1", seq=seq, delta=delta, restart=restart)


def done(text: str) -> CompletionResult:
    return CompletionResult(request_id="r1", text=text, provider="p", model="m")


@pytest.mark.parametrize(
    "chunks",
    [
        # the re-sent call joined the running one: its next chunk (marked restart) then the whole text
        [chunk(0, "Hello "), chunk(1, "wor"), chunk(2, "ld", restart=True), chunk(0, "Hello world", restart=True)],
        # the re-sent call's answer replayed from the start, in pieces
        [chunk(0, "Hello "), chunk(1, "wor"), chunk(0, "Hel", restart=True), chunk(1, "lo w"), chunk(2, "orld")],
        # a stored result replayed as one chunk after part of it was sent
        [chunk(0, "Hello "), chunk(0, "Hello world", restart=True)],
        # the re-sent call's chunks lost on the way: the rest comes with the result
        [chunk(0, "Hello "), chunk(3, "x", restart=True)],
        # a chunk lost while a NATS server restarted: the rest comes with the result
        [chunk(0, "Hello "), chunk(2, "ld"), chunk(3, "")],
    ],
)
def test_a_restarted_answer_reaches_an_openai_client_once(chunks: list[CompletionChunk]) -> None:
    """A client cannot take back text it has read: an answer that restarts continues after it instead."""
    assert stream_text(StreamEncoder("r1", model="m", include_usage=False), chunks, done("Hello world")) == (
        "Hello world",
        "stop",
    )


def test_an_answer_that_changed_after_part_was_sent_ends_in_an_error() -> None:
    chunks = [chunk(0, "Hello "), chunk(0, "Good", restart=True), chunk(1, "bye")]
    text, end = stream_text(StreamEncoder("r1", model="m", include_usage=False), chunks, done("Goodbye"))
    assert (text, end) == ("Hello ", "LLM_PROVIDER_ERROR")
