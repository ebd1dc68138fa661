"""Pure logic: file sniffing, keys, cache, rate-limit windows, SSE/OpenAI encoding, stats windows."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.dialogue import DiscussionEvent
from adp_common.schemas.llm import CompletionChunk, CompletionResult, Usage
from adp_gateway import files, pdf_text
from adp_gateway.auth import Principal, TTLCache, bearer_token, bootstrap_ids, hash_key, new_api_key
from adp_gateway.events import format_sse, format_sse_error, parse_last_event_id, parse_message
from adp_gateway.observability import StatsWindow
from adp_gateway.openai_compat import ChatCompletionRequest, StreamEncoder, to_completion_request
from adp_gateway.ratelimit import BlockedClients, LocalCounters, retry_after, window_index
from adp_testing.gateway import tiny_pdf
from adp_testing.hostile import empty_text_operators_pdf


@pytest.mark.parametrize(
    ("data", "ctype"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 10, "image/png"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 10, "image/jpeg"),
        (b"GIF89a" + b"\0" * 10, "image/gif"),
        (b"RIFF\x10\0\0\0WEBPVP8 ", "image/webp"),
        (b"%PDF-1.7\n", "application/pdf"),
        ("héllo wörld\n".encode(), "text/plain"),
        (b"MZ\x90\x00\x03", None),  # an executable, whatever its name says
        (b"\x00\x01\x02", None),
        (b"\xff\xfe\xfa", None),
    ],
)
def test_sniff_type_by_content(data: bytes, ctype: str | None) -> None:
    assert files.sniff_type(data) == ctype


def test_check_upload_size_and_type() -> None:
    with pytest.raises(PlatformError) as e:
        files.check_upload(b"a" * 11, 10)
    assert e.value.code == ErrorCode.INVALID_FILE_SIZE
    with pytest.raises(PlatformError) as e:
        files.check_upload(b"", 10)
    assert e.value.code == ErrorCode.VALIDATION_ERROR  # nothing was sent: a bad request, not a size problem
    with pytest.raises(PlatformError) as e:
        files.check_upload(b"MZ\x90\x00", 10)
    assert e.value.code == ErrorCode.INVALID_FILE_TYPE
    assert files.check_upload(b"plain", 10) == "text/plain"


def test_pdf_text_extracted_and_broken_pdf_refused() -> None:
    assert "Quarterly numbers" in pdf_text.extract(tiny_pdf("Quarterly numbers"), pdf_text.Limits())
    with pytest.raises(pdf_text.Unreadable):
        pdf_text.extract(b"%PDF-1.4\ngarbage that is no pdf", pdf_text.Limits())


def test_pdf_page_over_its_cpu_budget_is_unreadable() -> None:
    with pytest.raises(pdf_text.Unreadable, match="page 1 needs more work"):
        pdf_text.extract(empty_text_operators_pdf(pages=2), pdf_text.Limits(page_cpu_s=0.2))


def test_pdf_extraction_reply_parsed() -> None:
    assert files.parse_extraction(0, b'{"text": "abc"}') == "abc"
    for code, out in ((0, b'{"error": "encrypted PDFs are not supported"}'), (-24, b""), (0, b"{garbage")):
        with pytest.raises(PlatformError) as e:
            files.parse_extraction(code, out)
        assert e.value.code == ErrorCode.FILE_UNREADABLE


def test_safe_filename() -> None:
    assert files.safe_filename("../../etc/passwd") == "passwd"
    assert files.safe_filename("a<script>.txt") == "a_script_.txt"
    assert files.safe_filename(None) == "upload"


def test_keys_and_bearer() -> None:
    k1, k2 = new_api_key(), new_api_key()
    assert k1 != k2 and k1.startswith("adp_") and len(k1) > 40
    assert hash_key(k1) != k1 and len(hash_key(k1)) == 64
    assert bootstrap_ids("x") == bootstrap_ids("x") and bootstrap_ids("x")[1] != bootstrap_ids("y")[1]
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer") is None
    assert bearer_token(None) is None


def test_ttl_cache_expiry_negative_entries_and_revocation() -> None:
    c = TTLCache(5)
    p = Principal("u1", "user", "k1")
    c.put("h1", p, now=100)
    c.put("h2", None, now=100)
    assert c.get("h1", now=104) == (True, p)
    assert c.get("h2", now=104) == (True, None)
    assert c.get("h1", now=105.1) == (False, None)
    c.put("h1", p, now=200)
    c.drop_key_id("k1")
    assert c.get("h1", now=200) == (False, None)
    assert TTLCache(0).get("x") == (False, None)


def test_fixed_windows() -> None:
    assert window_index(119.9, 60) == 1 and window_index(120, 60) == 2
    assert retry_after(119.2, 60) == 1
    assert retry_after(60.0, 60) == 60
    lc = LocalCounters()
    assert lc.incr(["a", "b"], 1) == [1, 1]
    assert lc.incr(["a"], 1) == [2]
    assert lc.incr(["a"], 2) == [1]  # a new window starts from zero


def test_sse_format_and_last_event_id() -> None:
    ev = DiscussionEvent(discussionId="d1", seq=7, event="message-complete", data={"message": {"text": "a\nb"}})
    text = format_sse(ev)
    assert text.startswith("id: 7\nevent: message-complete\ndata: ")
    assert text.endswith("\n\n")
    payload = json.loads(text.split("data: ", 1)[1])
    assert payload == {"message": {"text": "a\nb"}, "discussionId": "d1"}
    chunk = DiscussionEvent(discussionId="d1", event="message-chunk", data={"chunk": "x"})
    assert "id:" not in format_sse(chunk)
    assert "SLOW_CONSUMER" in format_sse_error("d1", "SLOW_CONSUMER", "behind", 3)
    assert parse_last_event_id(None) == 0
    assert parse_last_event_id(" 12 ") == 12
    for bad in ("x", "-1", "1.5"):
        with pytest.raises(ValueError):
            parse_last_event_id(bad)
    parsed = parse_message("p.discussion.d1.chunks", chunk.model_dump_json().encode())
    assert parsed is not None and format_sse(parsed) == format_sse(chunk)
    assert (parsed.discussionId, parsed.seq, parsed.event, parsed.data) == ("d1", 0, "message-chunk", {"chunk": "x"})
    malformed = [b"not json", b"[1]", b'{"discussionId": "d1", "event": 3}']
    malformed.append(b'{"discussionId": "d1", "event": "e", "data": []}')
    for bad in malformed:
        assert parse_message("p.discussion.d1.chunks", bad) is None


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


def test_stats_window() -> None:
    w = StatsWindow(sample_size=10)
    for i in range(100):
        w.add(500 if i % 10 == 0 else (404 if i % 10 == 1 else 200), float(i))
    s = w.to_stats("gateway", "g1")
    assert (s.requests, s.errors, s.client_errors) == (100, 10, 10)
    assert len(s.latencies_ms) == 10 and s.latency_p95_ms is not None
    # an event stream counts as a request (and its status) but its duration is not a latency
    w = StatsWindow(sample_size=10)
    w.add(200, 3.0)
    w.add(200, None)
    w.add(500, None)
    s = w.to_stats("gateway", "g1")
    assert (s.requests, s.errors, s.latencies_ms, s.latency_p95_ms) == (3, 1, [3.0], 3.0)


def test_key_cache_evicts_the_least_recently_used() -> None:
    cache = TTLCache(60, max_entries=3)
    used = Principal(user_id="u", role="user", key_id="k")
    cache.put("in-use", used, now=0)
    for i in range(10):  # a flood of unknown keys
        cache.put(f"unknown-{i}", None, now=1)
        assert cache.get("in-use", now=1) == (True, used)
    assert cache.get("unknown-0", now=1) == (False, None)


def test_blocked_clients_expire_and_stay_bounded() -> None:
    blocked = BlockedClients(max_entries=2)
    blocked.block("a", 10, now=0)
    assert blocked.retry_after("a", now=2.5) == 8 and blocked.retry_after("b", now=0) == 0
    assert blocked.retry_after("a", now=10) == 0
    for c in ("a", "b", "c"):
        blocked.block(c, 10, now=20)
    assert blocked.retry_after("a", now=21) == 0 and blocked.retry_after("c", now=21) == 9
