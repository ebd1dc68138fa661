"""When to summarise, continue a cut-off answer, and ask the user questions (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from adp_dialogue.domain.personas import USER_PERSONA
from adp_dialogue.domain.prompts import Msg
from adp_dialogue.domain.text import ends_with_sentence, words

SUMMARY_RATIO = 0.8
SUMMARY_EVERY = 5


def summary_due(token_count: int, token_limit: int, round_number: int, last_summary_round: int = 0) -> str | None:
    """Why an automatic summary is due after `round_number` ('tokens' / 'interval'), or None."""
    if round_number <= last_summary_round:
        return None
    if token_limit > 0 and token_count >= SUMMARY_RATIO * token_limit:
        return "tokens"
    if round_number % SUMMARY_EVERY == 0:
        return "interval"
    return None


def needs_continuation(text: str, finish_reason: str | None) -> bool:
    """A response cut off by the token limit: finish_reason 'length' or it does not end on a sentence."""
    if not text.strip():
        return False
    return finish_reason == "length" or not ends_with_sentence(text)


def join_continuation(first: str, more: str) -> str:
    if not more:
        return first
    if first.endswith((" ", "\n")) or more.startswith((" ", "\n", ",", ".", ";", ":", "!", "?")):
        return first + more
    return first + " " + more


CONFUSION = (
    "unclear",
    "not clear",
    "confusing",
    "confused",
    "ambiguous",
    "not sure what",
    "hard to say without",
    "depends on what",
    "need more information",
    "need more context",
    "more details",
    "we don't know",
    "without knowing",
)
_STOP = set(
    "the a an and or of to in on for with about what how why when which is are be can should would could this that "
    "these those from into your our their it its as at by we you they i my me do does".split()
)
_USER_ADDRESS = re.compile(r"\b(user|you|your)\b", re.I)


@dataclass(frozen=True)
class QuestionTrigger:
    reason: str
    detail: str = ""


def topic_overlap(topic: str, text: str) -> float:
    keys = {w for w in words(topic) if len(w) > 3 and w not in _STOP}
    if not keys:
        return 1.0
    seen = set(words(text))
    # crude stemming: a topic word counts when a text word starts with its first 5 letters
    hit = sum(1 for k in keys if k in seen or any(s.startswith(k[:5]) for s in seen if len(s) >= 5))
    return hit / len(keys)


def question_trigger(
    topic: str,
    messages: list[Msg],
    round_number: int,
    *,
    min_round: int = 3,
    drift_threshold: float = 0.15,
) -> QuestionTrigger | None:
    """Whether to ask the user questions automatically after `round_number`."""
    if round_number < min_round:
        return None
    last = [m for m in messages if m.round == round_number and m.persona != USER_PERSONA]
    recent = [m for m in messages if m.round >= round_number - 1 and m.persona != USER_PERSONA]
    if not last:
        return None
    for m in last:
        for sentence in re.split(r"(?<=[.!?])\s+", m.content):
            s = sentence.strip()
            if s.endswith("?") and _USER_ADDRESS.search(s) and re.search(r"\buser\b", m.content, re.I):
                return QuestionTrigger("direct-question", f"{m.persona} asked the user: {s[:200]}")
    confused = [m.persona for m in recent if any(c in m.content.lower() for c in CONFUSION)]
    if len(confused) >= 2:
        return QuestionTrigger("confusion", ", ".join(sorted(set(confused))))
    overlap = topic_overlap(topic, " ".join(m.content for m in last))
    if overlap < drift_threshold:
        return QuestionTrigger("drift", f"topic overlap {overlap:.2f}")
    return None
