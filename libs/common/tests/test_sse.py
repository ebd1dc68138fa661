"""The one SSE module: what `encode` writes, the decoder reads back, however the network cuts the bytes."""

from __future__ import annotations

from adp_common.sse import SSEDecoder, SSEEvent, SSEParser, comment, encode, retry, split_events


def test_encoded_events_decode_back_across_every_cut() -> None:
    body = (
        retry(2000)
        + encode('{"a":1}', event="message-start", id=1)
        + comment("ping")
        + encode("line one\nline two", event="note")
        + encode("caf\u00e9 \u2014 ok")
        + encode('{"b":2}', event="discussion-stopped", id=2)
    )
    raw = body.encode()
    expected = [
        SSEEvent("message-start", '{"a":1}', "1"),
        SSEEvent("", "", None, "ping"),
        SSEEvent("note", "line one\nline two"),
        SSEEvent("message", "caf\u00e9 \u2014 ok"),
        SSEEvent("discussion-stopped", '{"b":2}', "2"),
    ]
    for size in (1, 2, 3, 7, 64, len(raw)):
        decoder = SSEDecoder(comments=True)
        got: list[SSEEvent] = []
        for i in range(0, len(raw), size):
            got += decoder.feed(raw[i : i + size])
        assert got == expected, size
    quiet = SSEDecoder()
    assert [e.event for e in quiet.feed(raw)] == ["message-start", "note", "message", "discussion-stopped"]


def test_crlf_and_field_rules() -> None:
    raw = b"id: 7\r\nevent: x\r\ndata:tight\r\ndata:  two spaces\r\n\r\n: only a comment\r\n\r\n"
    assert SSEDecoder().feed(raw) == [SSEEvent("x", "tight\n two spaces", "7")]


def test_sse_parser_events_comments_multiline() -> None:
    p = SSEParser()
    lines = [": keep-alive", "event: message_start", 'data: {"a":', "data: 1}", "", "data: [DONE]", ""]
    events = [e for e in (p.feed(line) for line in lines) if e is not None]
    assert [(e.event, e.data) for e in events] == [("message_start", '{"a":\n1}'), ("message", "[DONE]")]
    assert p.feed("") is None
    p.feed("data:x")
    tail = p.flush()
    assert tail is not None and tail.data == "x"


def _line_parsed(body: str) -> list[tuple[str, str]]:
    p = SSEParser()
    events = [p.feed(line) for line in body.replace("\r\n", "\n").split("\n")]
    return [(e.event, e.data) for e in events if e is not None]


def test_split_events_agrees_with_the_line_parser_whatever_the_reads() -> None:
    body = (
        'data: {"choices":[{"delta":{"content":"h\u00e9 "}}]}\n\n'
        ": keep-alive\n\n"
        'event: content_block_delta\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
        "data: caf\u00e9 \u2014 ok\n\n\n"
        "data:tight\n\n"
        "data: [DONE]\n\n"
        "data: unfinished"
    )
    raw = body.encode()
    expected = _line_parsed(body)
    assert ("content_block_delta", '{"a":\n1}') in expected and expected[-1] == ("message", "[DONE]")
    for size in (1, 2, 3, 5, 7, 16, 64, len(raw)):  # every way the network could cut it, UTF-8 included
        got: list[tuple[str, str]] = []
        rest = b""
        for i in range(0, len(raw), size):
            events, rest = split_events(rest + raw[i : i + size])
            got += [(e.event, e.data) for e in events]
        assert got == expected, size
        assert rest == b"data: unfinished"
