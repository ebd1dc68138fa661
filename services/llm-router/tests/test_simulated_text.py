"""Simulated provider text: turns per persona and round, other tasks."""

from __future__ import annotations

import json

import pytest

from adp_common.schemas.llm import ChatMessage, CompletionRequest
from adp_router.simulated_text import generate, tokens_of, word_count


def _req(
    task: str | None, persona: str | None = None, rnd: int | None = None, topic: str = "Pick a database"
) -> CompletionRequest:
    return CompletionRequest(
        messages=[ChatMessage(role="system", content="be nice"), ChatMessage(role="user", content=f"Topic: {topic}")],
        task=task,
        persona=persona,
        round=rnd,
    )


@pytest.mark.parametrize("persona", ["Analyzer", "Solver", "Moderator"])
@pytest.mark.parametrize("rnd", [1, 3, 5, 7])
def test_simulated_turns(persona: str, rnd: int) -> None:
    text = generate(_req("turn", persona, rnd))
    assert text == generate(_req("turn", persona, rnd))  # deterministic
    assert 60 <= word_count(text) <= 150, text
    assert text.rstrip().endswith((".", "?"))
    others = {"Analyzer", "Solver", "Moderator"} - {persona}
    assert any(o in text for o in others)
    if rnd >= 5:
        assert "agree" in text.lower() and "consensus" in text.lower()
    if persona == "Moderator" and rnd >= 5:
        assert "\nSolution:" in text or " Solution: " in text
    if persona == "Solver" and rnd < 5:
        assert "1." in text and "2." in text
    assert "".join(tokens_of(text)) == text


def test_simulated_other_tasks() -> None:
    q = json.loads(generate(_req("questions")))
    assert len(q["questions"]) == 3
    assert all(2 <= len(x["options"]) <= 4 and x["text"] for x in q["questions"])
    assert 500 <= len(generate(_req("final"))) <= 1000
    assert "Summary" in generate(_req("summary"))
    assert generate(_req("continue")).strip()
    assert generate(_req(None)) != generate(_req(None, topic="Something else"))
