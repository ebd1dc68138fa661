"""Parsing the model's multiple-choice questions for the user, robustly (pure)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MIN_QUESTIONS = 2
MAX_QUESTIONS = 5
MIN_OPTIONS = 2
MAX_OPTIONS = 6
MAX_TEXT = 500

FALLBACK_QUESTIONS: list[tuple[str, list[str]]] = [
    (
        "Which direction should the discussion focus on next?",
        ["Go deeper on the current proposal", "Explore alternative approaches", "Focus on risks and edge cases"],
    ),
    (
        "What matters most for the solution?",
        ["Simplicity", "Cost", "Speed of delivery", "Robustness"],
    ),
]


@dataclass(frozen=True)
class Option:
    id: str
    text: str


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    options: list[Option]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "options": [{"id": o.id, "text": o.text} for o in self.options]}


@dataclass(frozen=True)
class ParseResult:
    questions: list[Question]
    fallback: bool  # True when any fallback question had to be used
    problems: list[str]


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def _json_candidates(text: str) -> list[Any]:
    """Every JSON value found in the text: fenced blocks first, then each '{' / '[' start (trailing text ok)."""
    found: list[Any] = []
    sources = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for src in sources:
        for i, ch in enumerate(src):
            if ch not in "{[":
                continue
            try:
                value, _ = decoder.raw_decode(src, i)
            except ValueError:
                continue
            found.append(value)
            break
    return found


def _clean(s: Any) -> str:
    if not isinstance(s, str):
        return ""
    return re.sub(r"\s+", " ", s).strip()[:MAX_TEXT]


def _items(value: Any) -> list[Any] | None:
    if isinstance(value, dict):
        for key in ("questions", "items", "data"):
            found = value.get(key)
            if isinstance(found, list):
                return found
        if "text" in value or "question" in value:
            return [value]
        return None
    if isinstance(value, list):
        return value
    return None


def _question(raw: Any) -> tuple[str, list[str]] | None:
    if not isinstance(raw, dict):
        return None
    text = _clean(raw.get("text") or raw.get("question") or raw.get("q"))
    opts_raw = raw.get("options") or raw.get("choices") or raw.get("answers") or []
    if not text or not isinstance(opts_raw, list):
        return None
    options: list[str] = []
    for o in opts_raw:
        t = _clean(o.get("text") or o.get("label") or o.get("option")) if isinstance(o, dict) else _clean(o)
        if isinstance(o, (int, float)) and not isinstance(o, bool):
            t = str(o)
        if t and t.lower() not in (x.lower() for x in options):
            options.append(t)
    if len(options) < MIN_OPTIONS:
        return None
    return text, options[:MAX_OPTIONS]


def build(questions: list[tuple[str, list[str]]]) -> list[Question]:
    return [
        Question(
            id=f"q{i}",
            text=text,
            options=[Option(id=f"q{i}o{j}", text=o) for j, o in enumerate(opts, start=1)],
        )
        for i, (text, opts) in enumerate(questions, start=1)
    ]


def parse_questions(text: str) -> ParseResult:
    """2-5 questions with >= 2 options each and ids assigned; fallback questions fill in when parsing fails."""
    problems: list[str] = []
    parsed: list[tuple[str, list[str]]] = []
    candidates = _json_candidates(text or "")
    if not candidates:
        problems.append("no JSON found")
    for value in candidates:
        items = _items(value)
        if items is None:
            problems.append("JSON has no questions list")
            continue
        for raw in items:
            q = _question(raw)
            if q is None:
                problems.append("dropped an invalid question")
            elif q[0].lower() not in (p[0].lower() for p in parsed):
                parsed.append(q)
        if parsed:
            break
    if len(parsed) > MAX_QUESTIONS:
        problems.append(f"{len(parsed)} questions; kept {MAX_QUESTIONS}")
        parsed = parsed[:MAX_QUESTIONS]
    fallback = False
    if len(parsed) < MIN_QUESTIONS:
        problems.append(f"only {len(parsed)} valid questions; added fallback")
        fallback = True
        for fb in FALLBACK_QUESTIONS:
            if len(parsed) >= MIN_QUESTIONS:
                break
            parsed.append(fb)
    return ParseResult(build(parsed), fallback, problems)


def validate_answers(questions: list[dict[str, Any]], answers: dict[str, list[str]]) -> list[str]:
    """Problems with `answers` ({questionId: [optionId]}) against a question set; empty when valid."""
    problems = []
    by_id = {q["id"]: {o["id"] for o in q["options"]} for q in questions}
    if not answers:
        problems.append("no answers given")
    for qid, opts in answers.items():
        if qid not in by_id:
            problems.append(f"unknown question {qid}")
            continue
        if not opts:
            problems.append(f"no option chosen for {qid}")
        for o in opts:
            if o not in by_id[qid]:
                problems.append(f"unknown option {o} for {qid}")
    return problems


def answers_text(questions: list[dict[str, Any]], answers: dict[str, list[str]]) -> str:
    """The user's answers as a message the personas read."""
    lines = ["My answers to your questions:"]
    for q in questions:
        chosen = answers.get(q["id"])
        if not chosen:
            continue
        texts = [o["text"] for o in q["options"] if o["id"] in chosen]
        lines.append(f"- {q['text']} → {', '.join(texts)}")
    return "\n".join(lines)
