"""SSE framing and Last-Event-ID parsing."""

from __future__ import annotations

import json

import pytest

from adp_common.schemas.dialogue import DiscussionEvent
from adp_gateway.events import format_sse, format_sse_error, parse_last_event_id, parse_message


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
