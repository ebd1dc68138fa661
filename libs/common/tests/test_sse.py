"""The one SSE module: what `encode` writes, the decoder reads back, however the network cuts the bytes."""

from __future__ import annotations

from adp_common.sse import SSEDecoder, SSEEvent, comment, encode, retry


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
