"""Provider adapters: Retry-After parsing, Anthropic message shaping."""

from __future__ import annotations

import pytest

from adp_common.schemas.llm import ChatMessage, CompletionRequest
from adp_router.providers.anthropic import to_anthropic
from adp_router.providers.base import parse_retry_after


def test_retry_after_parsing() -> None:
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None


def test_anthropic_message_shaping() -> None:
    req = CompletionRequest(
        messages=[
            ChatMessage(role="system", content="s"),
            ChatMessage(role="assistant", content="a"),
            ChatMessage(role="user", content="u1"),
            ChatMessage(role="user", content="u2"),
        ]
    )
    system, msgs = to_anthropic(req)
    assert system == "s"
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[2]["content"] == "u1\n\nu2"
