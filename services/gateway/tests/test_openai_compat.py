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
        + enc.chunk(CompletionChunk(request_id="r1", seq=0, delta="Hel"))
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
